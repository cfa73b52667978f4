"""Attribution: a bounce is tied to what we sent by its signed VERP token, else by the
signed quoted Message-ID; an address alone, a forged token or a made-up Message-ID ties it
to nobody (unverified, naming whom it would have hit).
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer.bounces.actions import record_bounce
from mailer.bounces.attribute import attribute
from mailer.bounces.models import Bounce, BounceClass
from mailer.bounces.parse import BounceTooLarge
from mailer.config import IdentitySettings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.editions.models import Edition
from mailer.emails.verp import return_path
from mailer.lists.models import Subscription
from mailer.models import Base
from mailer.subscribers.models import ConfirmationToken, Suppression
from tests.support import subscribers
from tests.support.bounce_mail import newsletter_id, verp_of
from tests.support.bounce_reading import OURS, parse_bounce
from tests.support.factories import BOUNCES, stack_keys

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)
CORPUS = Path(__file__).parent / "fixtures" / "bounces"
TEMPLATE = "postfix-user-unknown.eml"
# What the template bounce says, to be replaced with this test's rows.
OLD_VERP = "bounces+d2n-k3zx5u2m7n4p6rva@bounces.cep-probation.example.org"
OLD_MID = "<nl.12.3455.5d1f0c9e2b7a48e6a1c3f2d4@cep-probation.example.org>"
OLD_RCPT = "anna.berg@example.net"


def _bounce(*, verp: str = "", mid: str = "", rcpt: str = OLD_RCPT, name: str = TEMPLATE) -> bytes:
    """The template bounce rewritten for this test: its VERP address (or none), the
    quoted Message-ID and the failed recipient."""
    text = (CORPUS / name).read_text(encoding="utf-8")
    text = text.replace(OLD_VERP, verp or "newsletter-bounces@bounces.cep-probation.example.org")
    return text.replace(OLD_MID, mid or "<unrelated.1@elsewhere.example>").replace(
        OLD_RCPT, rcpt).encode()


def _sent(email: str, *, slug: str = "march-2026") -> tuple[int, int, int]:
    """A confirmed subscriber, an edition and a delivery of it: (subscriber, edition, delivery)."""
    sub = subscribers.make(email, "confirmed")
    now = utcnow()
    with transaction() as s:
        edition = s.scalars(select(Edition).where(Edition.slug == slug)).first()
        if edition is None:
            edition = Edition(slug=slug, subject="CEP Newsletter", state="sent",
                              window_start=now - dt.timedelta(days=60), window_end=now)
            s.add(edition)
            s.flush()
        delivery = Delivery(edition_id=edition.id, subscriber_id=sub.id, state="sent",
                            sent_at=now)
        s.add(delivery)
        s.flush()
        return sub.id, edition.id, delivery.id


def _attribute(raw: bytes, envelope_to: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    report = parse_bounce(raw, envelope_to=envelope_to)
    with transaction() as s:
        return attribute(s, report, report.recipients[0] if report.recipients else None,
                         ours=OURS, keys=stack_keys())


def _forge(address: str) -> str:
    """The same token with one character of its signature changed."""
    local, domain = address.split("@")
    last = "a" if local[-1] != "a" else "b"
    return f"{local[:-1]}{last}@{domain}"


def test_a_valid_verp_token_names_the_delivery(clean) -> None:
    subscriber_id, edition_id, delivery_id = _sent("anna.berg@example.net")
    found = _attribute(_bounce(verp=verp_of(delivery_id)))
    assert (found.method, found.delivery_id, found.edition_id, found.subscriber_id) == (
        "verp", delivery_id, edition_id, subscriber_id)
    assert "signature valid" in found.note


def test_the_token_counts_even_when_the_bounce_names_a_forwarding_address(clean) -> None:
    """The reader forwards to another mailbox that bounces: still the reader's delivery."""
    subscriber_id, _, delivery_id = _sent("anna.berg@example.net")
    found = _attribute(_bounce(verp=verp_of(delivery_id),
                               rcpt="anna.private@example.com"))
    assert (found.method, found.subscriber_id) == ("verp", subscriber_id)


def test_the_token_is_found_in_the_envelope_or_the_quoted_return_path(clean) -> None:
    subscriber_id, _, delivery_id = _sent("anna.berg@example.net")
    verp = verp_of(delivery_id)
    raw = _bounce(verp="")  # the headers name no token …
    assert _attribute(raw, (verp,)).subscriber_id == subscriber_id  # … the RCPT TO does
    quoted = raw.replace(b"Return-Path: <newsletter-bounces@",
                         f"Return-Path: <{verp}>\nX-Was: <".encode())
    found = _attribute(quoted)
    assert (found.method, found.delivery_id) == ("verp", delivery_id)


def test_a_confirmation_mail_token_names_the_subscriber(clean) -> None:
    sub = subscribers.make("marta.nowak@example.org", "pending")
    with transaction() as s:
        token_id = s.scalar(select(ConfirmationToken.id).where(
            ConfirmationToken.subscriber_id == sub.id))
    verp = return_path("confirmation", token_id, identity=IDENTITY, keys=stack_keys())
    found = _attribute(_bounce(verp=verp, rcpt="marta.nowak@example.org"))
    assert (found.method, found.subscriber_id, found.confirmation_token_id, found.delivery_id) \
        == ("verp", sub.id, token_id, None)


def test_a_forged_token_attributes_nobody_even_a_subscriber(clean) -> None:
    _, _, delivery_id = _sent("anna.berg@example.net")
    forged = _forge(verp_of(delivery_id))
    mid = newsletter_id(1, delivery_id)
    found = _attribute(_bounce(verp=forged, mid=mid))
    assert (found.method, found.subscriber_id, found.delivery_id) == ("none", None, None)
    assert "forged" in found.note


def test_the_backscatter_fixture_attributes_nobody(clean) -> None:
    _sent("anna.berg@example.net")
    found = _attribute((CORPUS / "backscatter-forged-verp.eml").read_bytes())
    assert (found.method, found.subscriber_id) == ("none", None)


def test_a_test_copy_and_a_vanished_delivery(clean) -> None:
    _sent("anna.berg@example.net")
    test_copy = _attribute(_bounce(verp=return_path("test", 3, identity=IDENTITY,
                                                    keys=stack_keys())))
    assert (test_copy.method, test_copy.subscriber_id) == ("verp", None)
    gone = _attribute(_bounce(verp=verp_of(999_999)))
    assert (gone.method, gone.delivery_id, gone.subscriber_id) == ("verp", None, None)
    assert "no longer exists" in gone.note


def test_without_a_token_the_quoted_message_id_names_the_delivery(clean) -> None:
    subscriber_id, edition_id, delivery_id = _sent("anna.berg@example.net")
    found = _attribute(_bounce(mid=newsletter_id(edition_id, delivery_id),
                               rcpt="someone.else@example.com"))
    assert (found.method, found.delivery_id, found.subscriber_id) == (
        "message-id", delivery_id, subscriber_id)


def test_an_altered_message_id_says_nothing(clean) -> None:
    _, edition_id, delivery_id = _sent("anna.berg@example.net")
    altered = newsletter_id(edition_id, delivery_id).replace(
        f".{delivery_id}.", f".{delivery_id + 1}.")
    found = _attribute(_bounce(mid=altered, rcpt="nobody@example.com"))
    assert (found.method, found.subscriber_id) == ("none", None)


def test_an_address_alone_ties_nobody_but_names_the_subscriber(clean) -> None:
    """Anyone can write a DSN naming a reader's address: with no token and no signed
    Message-ID it is unverified. It says whom it names, and acts on nobody. (Before issue 9
    the address alone attributed the bounce, and so suppressed the reader.)"""
    subscriber_id, _, _ = _sent("anna.berg@example.net")
    found = _attribute(_bounce(rcpt="Anna.Berg@EXAMPLE.net"))
    assert (found.method, found.subscriber_id, found.delivery_id) == ("none", None, None)
    assert (found.unverified, found.claimed_subscriber_id) == ("no-token", subscriber_id)
    stranger = _attribute(_bounce(rcpt="stranger@example.com"))
    assert (stranger.method, stranger.subscriber_id, stranger.claimed_subscriber_id) == (
        "none", None, None)
    assert stranger.unverified == "no-token"


def test_the_original_recipient_of_an_expanded_alias_is_who_it_names(clean) -> None:
    """Final-Recipient is the internal mailbox the alias led to; we sent to the original."""
    subscriber_id, _, _ = _sent("anna.berg@example.net")
    raw = _bounce().replace(b"Final-Recipient: rfc822; anna.berg@example.net",
                            b"Final-Recipient: rfc822; aberg@mailstore.internal.example")
    report = parse_bounce(raw)
    assert report.recipients[0].recipient == "aberg@mailstore.internal.example"
    assert report.recipients[0].original_recipient == "anna.berg@example.net"
    with transaction() as s:
        found = attribute(s, report, report.recipients[0], ours=OURS, keys=stack_keys())
    assert (found.method, found.subscriber_id) == ("none", None)
    assert found.claimed_subscriber_id == subscriber_id


def test_a_valid_token_about_another_subscribers_address_is_unverified(clean) -> None:
    anna, _, anna_delivery = _sent("anna.berg@example.net")
    bob, _, _ = _sent("bob.smith@example.net")
    found = _attribute(_bounce(verp=verp_of(anna_delivery),
                               rcpt="bob.smith@example.net"))
    assert (found.method, found.subscriber_id, found.unverified) == (
        "none", None, "other-recipient")
    assert (found.claimed_delivery_id, found.claimed_subscriber_id) == (anna_delivery, anna)
    assert "bob.smith@example.net" in found.note and bob != anna


def test_made_up_message_ids_tie_nobody(clean) -> None:
    """Sequential delivery ids and the unkeyed digest the ids carried before: no tie."""
    import hashlib

    subscriber_id, edition_id, delivery_id = _sent("anna.berg@example.net")
    list_id = "newsletter.cep-probation.example.org"
    digest = hashlib.sha256("\x00".join(["nl", str(edition_id), str(delivery_id), list_id])
                            .encode()).hexdigest()[:24]
    for forged in (f"<nl.{edition_id}.{delivery_id}.{digest}@cep-probation.example.org>",
                   f"<nl.{edition_id}.{delivery_id}@cep-probation.example.org>",
                   f"<nl.{edition_id}.{delivery_id}.{'a' * 26}@cep-probation.example.org>"):
        found = _attribute(_bounce(mid=forged, rcpt="someone@example.com"))
        assert (found.method, found.subscriber_id, found.unverified) == (
            "none", None, "forged-message-id"), forged
    genuine = _attribute(_bounce(mid=newsletter_id(edition_id, delivery_id),
                                 rcpt="someone@example.com"))
    assert (genuine.method, genuine.subscriber_id) == ("message-id", subscriber_id)


def _counts() -> dict[str, int]:
    with transaction() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0
                for t in Base.metadata.sorted_tables}


def test_attribution_changes_nothing(clean) -> None:
    for address in ("anna.berg@example.net", "p.okafor@probation.example.co.uk"):
        _sent(address)
    before = _counts()
    with transaction() as s:
        for path in sorted(CORPUS.glob("*.eml")):
            report = parse_bounce(path.read_bytes())
            for failure in report.recipients or [None]:
                attribute(s, report, failure, ours=OURS, keys=stack_keys())
            assert not (s.new or s.dirty or s.deleted)
    assert _counts() == before


HOSTILE = [
    "backscatter-forged-verp.eml", "malformed-bad-base64-unclosed.eml",
    "malformed-multipart-without-boundary.eml", "truncated-dsn-mid-field.eml",
    "truncated-dsn-before-recipient.eml", "garbage-binary.eml", "bounce-without-details.eml",
    "human-reply.eml", "human-reply-delivery-question.eml", "vacation-auto-submitted.eml",
    "out-of-office-no-header.eml", "challenge-response.eml",
]


def _take_in(raw: bytes) -> None:
    """What the intake does with a bounce mail: parse, attribute, record (and so act)."""
    try:
        report = parse_bounce(raw, max_bytes=256 * 1024)
    except BounceTooLarge:
        return
    with transaction() as s:
        for failure in report.recipients or [None]:
            found = attribute(s, report, failure, ours=OURS, keys=stack_keys())
            record_bounce(
                s, bounces=BOUNCES,
                bounce_class=failure.bounce_class if failure else BounceClass.unparsed,
                source="import", recipient=failure.recipient if failure else "",
                status_code=failure.status if failure else "",
                delivery_id=found.delivery_id, edition_id=found.edition_id,
                subscriber_id=found.subscriber_id, attribution=found.method,
                attribution_note=found.note, fingerprint=str(hash(raw)),
            )


def test_forged_broken_and_harmless_mail_suppresses_nobody(clean) -> None:
    # Every address these messages name is a subscriber, with a delivery of its own.
    named = {"anna.berg@example.net", "w.jones@prison-service.example",
             "olivia.brown@magistrates.example.org.uk", "giulia.ricci@uepe.example.it",
             "koen.desmet@justitiehuizen.example.be", "m.dubois@justice.example.be",
             "ingrid.johansson@kriminalvarden.example.se", "antonio.russo@studiolegale.example.it",
             "kevin.oneill@probation.example.co.uk"}
    deliveries = {address: _sent(address)[2] for address in sorted(named)}
    # Their VERP tokens were signed with a key this test run never had: all forged.
    for name in HOSTILE:
        _take_in((CORPUS / name).read_bytes())
    # A truncated copy of a real bounce, forged to every delivery, and a huge one.
    anna = deliveries["anna.berg@example.net"]
    real = _bounce(verp=_forge(verp_of(anna)))
    _take_in(real[: len(real) // 2])
    _take_in(real + b"x" * (300 * 1024))

    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 0
        assert set(s.scalars(select(Subscription.status))) == {"confirmed"}
        kept = s.scalar(select(func.count()).select_from(Bounce))
    assert kept >= len(HOSTILE)  # kept as evidence, acted on for nobody

    # The same bounce with the genuine token does suppress: the guard is the signature.
    _take_in(_bounce(verp=verp_of(anna)))
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1


@pytest.mark.parametrize("kind", ["hard", "policy"])
def test_only_a_hard_bounce_with_a_valid_token_suppresses(clean, kind: str) -> None:
    """Policy rejections (DMARC, block lists) are the sender's problem: never suppress."""
    _, _, delivery_id = _sent("georg.huber@gmail.com")
    name = "postfix-user-unknown.eml" if kind == "hard" else "gmail-relay-dmarc-5.7.26.eml"
    raw = (CORPUS / name).read_text(encoding="utf-8")
    for old in (OLD_VERP, "bounces+d31-mn7op2qr3st4uv5w@bounces.cep-probation.example.org"):
        raw = raw.replace(old, verp_of(delivery_id))
    _take_in(raw.replace(OLD_RCPT, "georg.huber@gmail.com").encode())
    with transaction() as s:
        suppressed = s.scalar(select(func.count()).select_from(Suppression))
    assert suppressed == (1 if kind == "hard" else 0)
