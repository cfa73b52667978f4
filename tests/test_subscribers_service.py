"""The subscribers service against the real databases: addresses, races, the confirmation
mail's failures and daily limit, the 14-day purge run by a real worker."""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import pytest
from sqlalchemy import func, select, update

from mailer import privacy
from mailer.config import SignupSettings, get_settings
from mailer.db import transaction, utcnow
from mailer.lists.service import first_list
from mailer.subscribers.addresses import InvalidAddress, normalise
from mailer.subscribers.confirmation_mail import MailResult, send_confirmation_mail
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber
from mailer.subscribers.signup import Profile, sign_up
from mailer.subscribers.unsubscribe import unsubscribe
from tests.conftest import wait_for
from tests.support.subscribers import (
    ORIGIN,
    events,
    list_status,
    make,
    move_back,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
    tokens,
)


def _sign_up(address: str, **profile: str) -> int:
    with transaction() as s:
        return sign_up(s, email=address, profile=Profile(**profile),
                       origin=ORIGIN, signup=get_settings().signup, lists=[first_list(s)]).id


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    "anna@example.org", "Anna@Example.ORG", "  ANNA@EXAMPLE.ORG ", "ａｎｎａ@ｅｘａｍｐｌｅ.ｏｒｇ",
    "Ａｎｎａ＠example.org",
])
def test_case_and_unicode_variants_are_one_subscriber(clean, variant: str) -> None:
    first = _sign_up("anna@example.org")
    assert _sign_up(variant) == first
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 1


def test_international_domains_are_stored_in_the_form_we_can_send_to(clean) -> None:
    a = _sign_up("Jorg@bücher.de")
    assert _sign_up("jorg@BÜCHER.de") == a
    assert _sign_up("jorg@xn--bcher-kva.de") == a
    sub = subscriber("jorg@bücher.de")
    assert sub.email == "jorg@xn--bcher-kva.de"  # as last typed, the domain in ASCII


@pytest.mark.parametrize("address,says", [
    ("müller@example.de", "letters before the @"),
    ("anna@example", "not a valid email address"),
    ("anna@@example.org", "not a valid email address"),
    ("anna@example.org\n", "line breaks"),
    ("", "enter an email address"),
])
def test_addresses_we_cannot_mail_are_refused_with_a_reason(address: str, says: str) -> None:
    with pytest.raises(InvalidAddress, match=says):
        normalise(address)


def test_the_stored_address_always_normalises_to_itself(clean) -> None:
    for address in ("O'Brien@Example.IE", "x+tag@Sub.Example.ORG", "ｚｏｅ@ｅｘａｍｐｌｅ.ｏｒｇ"):
        _sign_up(address)
    with transaction() as s:
        for sub in s.scalars(select(Subscriber)):
            assert normalise(sub.email) == (sub.email, sub.email_key)


def test_simultaneous_sign_ups_for_one_address_make_one_subscriber(clean) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(lambda i: _sign_up("race@example.org", first_name=f"R{i}"),
                            range(12)))
    assert len(set(ids)) == 1
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 1
        # Every sign-up is on the record; exactly one link is open.
        assert s.scalar(select(func.count()).select_from(ConsentEvent)) == 12
        assert s.scalar(select(func.count()).select_from(ConfirmationToken).where(
            ConfirmationToken.used_at.is_(None))) == 1


def test_a_confirmed_subscriber_is_not_changed_by_the_form(clean) -> None:
    reader = make("kept@example.org", "confirmed", first_name="Kept")
    with transaction() as s:
        sign_up(s, email="KEPT@example.org",
                        profile=Profile(first_name="Mallory", organisation="Evil"),
                        origin=ORIGIN, signup=get_settings().signup, lists=[first_list(s)])
    after = subscriber("kept@example.org")
    assert (list_status("kept@example.org"), after.first_name, after.organisation) == (
        "confirmed", "Kept", "")
    assert events(reader.id)[-1] == "already_subscribed"
    assert all(t.used_at is not None for t in tokens(reader.id))


# --- the confirmation mail -----------------------------------------------------------------


def test_a_temporary_smtp_failure_backs_off_and_the_sweeper_waits(clean, worker) -> None:
    """451 at RCPT: the mail is retried later, and until then the sweeper leaves it alone
    (else every sweep would start one more chain of retries for the same address)."""
    from mailer.subscribers.confirmation import confirmations_to_resend

    reader = make("greylisted@example.org", "pending")
    clean.smtp.behaviour.add("greylisted@example.org", "rcpt", "451 4.7.1 Greylisted", times=1)
    assert send_confirmation_mail(reader.id, settings=get_settings(),
                                  retry_in=600) == MailResult.retry
    [token] = tokens(reader.id)
    assert "451" in token.last_error and token.sent_at is None
    assert token.claimed_until > utcnow() + dt.timedelta(seconds=590)
    move_back(reader.id, dt.timedelta(minutes=5))  # the sweeper only looks at older tokens
    with transaction() as s:
        s.execute(update(ConfirmationToken).values(claimed_until=utcnow() + dt.timedelta(
            seconds=300)))
        assert confirmations_to_resend(s, older_than=dt.timedelta(minutes=2)) == []

    # Time passes (the claim runs out): the sweeper, in a real worker, sends it.
    with transaction() as s:
        s.execute(update(ConfirmationToken).values(claimed_until=utcnow() - dt.timedelta(
            seconds=1)))
        assert confirmations_to_resend(s, older_than=dt.timedelta(minutes=2)) == [reader.id]
    from workers.maintenance import sweep

    sweep.delay()
    wait_for(lambda: clean.smtp.to("greylisted@example.org"), what="the mail, sent by the sweep")
    # The worker records the mail once the server has taken it: a moment after it arrives.
    wait_for(lambda: len(events(reader.id)) > 1, what="the sent mail recorded")
    assert events(reader.id) == ["subscribed", "confirmation_sent"]
    assert len(clean.smtp.to("greylisted@example.org")) == 1
    [token] = tokens(reader.id)
    assert token.sent_at is not None and token.message_id


def test_a_permanent_smtp_failure_is_not_retried(clean) -> None:
    from mailer.subscribers.confirmation import confirmations_to_resend

    reader = make("nobody@example.org", "pending")
    clean.smtp.behaviour.add("nobody@example.org", "rcpt", "550 5.1.1 No such user")
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.failed
    [token] = tokens(reader.id)
    assert "550" in token.last_error and token.claimed_until == token.expires_at
    move_back(reader.id, dt.timedelta(minutes=5))
    with transaction() as s:
        assert confirmations_to_resend(s, older_than=dt.timedelta(minutes=2)) == []
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.nothing


def test_at_most_one_confirmation_mail_a_day_even_after_unsubscribing(clean) -> None:
    from mailer.subscribers.confirmation import confirmations_to_resend

    reader = make("daily@example.org", "pending")
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.sent
    with transaction() as s:
        unsubscribe(s, s.get(Subscriber, reader.id), list_id=None, channel="link")
    _sign_up("daily@example.org")  # back the same day: a new link, but no mail today
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.nothing
    assert len(clean.smtp.to("daily@example.org")) == 1
    move_back(reader.id, dt.timedelta(minutes=5))
    with transaction() as s:
        assert confirmations_to_resend(s, older_than=dt.timedelta(minutes=2)) == []

    move_back(reader.id, dt.timedelta(days=1))  # the next day
    with transaction() as s:
        assert confirmations_to_resend(s, older_than=dt.timedelta(minutes=2)) == [reader.id]
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.sent
    assert len(clean.smtp.to("daily@example.org")) == 2
    # safe to run twice
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.nothing


def test_nothing_is_mailed_to_a_confirmed_or_vanished_reader(clean) -> None:
    reader = make("done@example.org", "confirmed")
    assert send_confirmation_mail(reader.id, settings=get_settings()) == MailResult.nothing
    assert send_confirmation_mail(999_999, settings=get_settings()) == MailResult.nothing
    assert clean.smtp.messages == []


# --- the 14-day purge ---------------------------------------------------------------------------

PENDING_DAYS = dt.timedelta(days=SignupSettings().purge_pending_after_days)  # 14


def test_the_beat_schedule_purges_pending_sign_ups_at_least_daily() -> None:
    from mailer.config import Settings
    from workers.app import beat_schedule

    entry = beat_schedule(Settings())["purge-pending-signups"]
    assert entry["task"] == "workers.maintenance.purge_pending_signups"
    assert float(entry["schedule"]) <= 24 * 3600  # so nobody waits much beyond 14 days


def test_pending_sign_ups_older_than_14_days_are_purged_by_the_worker(clean, worker) -> None:
    stale = make("stale@example.org", "pending", first_name="Stale")
    young = make("young@example.org", "pending")
    returned = make("returned@example.org", "unsubscribed")
    confirmed = make("loyal@example.org", "confirmed")
    _sign_up("returned@example.org")  # re-subscribed, never confirmed again
    for reader in (stale, returned, confirmed):
        move_back(reader.id, dt.timedelta(days=14, minutes=1))
    move_back(young.id, dt.timedelta(days=13, hours=23))

    from workers.maintenance import purge_pending_signups

    purge_pending_signups.delay()
    wait_for(lambda: subscriber("stale@example.org") is None, what="the purge")
    wait_for(lambda: list_status("returned@example.org") == "unsubscribed",
             what="the purge of the re-subscription")

    # Gone without a trace: no events, no tokens left behind.
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(ConsentEvent).where(
            ConsentEvent.subscriber_id == stale.id)) == 0
        assert s.scalar(select(func.count()).select_from(ConsentEvent).where(
            ConsentEvent.address_hash == stale.address_hash)) == 0
        assert s.scalar(select(func.count()).select_from(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == stale.id)) == 0
    assert list_status("young@example.org") == "pending"
    assert list_status("loyal@example.org") == "confirmed"
    # Someone who had consented once keeps the record, with the reason it ended.
    assert events(returned.id)[-2:] == ["resubscribed", "unsubscribed"]
    with transaction() as s:
        last = s.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == returned.id)
                         .order_by(ConsentEvent.id.desc())).first()
    assert last.channel == "unconfirmed"
    assert all(t.used_at is not None for t in tokens(returned.id))

    # Safe to run twice.
    with transaction() as s:
        assert privacy.purge_pending(s, older_than=PENDING_DAYS) == 0


def test_a_sign_up_again_restarts_the_14_days(clean) -> None:
    reader = make("again@example.org", "pending")
    move_back(reader.id, dt.timedelta(days=10))
    _sign_up("again@example.org")  # nothing changes in the row but the clock
    move_back(reader.id, dt.timedelta(days=10))
    with transaction() as s:
        assert privacy.purge_pending(s, older_than=PENDING_DAYS) == 0
    assert subscriber("again@example.org") is not None


def test_a_fresh_double_opt_in_after_erasure_lifts_the_suppression(clean) -> None:
    from mailer.subscribers.models import Suppression

    make("phoenix@example.org", "confirmed")
    with transaction() as s:
        privacy.erase_address(s, "phoenix@example.org", by="test")
    # She signs up again herself, and confirms: fresh consent.
    reader = make("Phoenix@example.org", "confirmed")
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 0
    assert events(reader.id) == ["subscribed", "confirmed", "unsuppressed"]
    # Signing up alone (without confirming) lifts nothing.
    with transaction() as s:
        privacy.erase_address(s, "phoenix@example.org", by="test")
    make("phoenix@example.org", "pending")
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1


def test_a_search_for_a_part_of_an_address_finds_it_and_postgresql_uses_the_index(
        clean) -> None:
    from sqlalchemy import text

    from mailer.subscribers import queries
    from tests.support.factories import make_subscribers

    make_subscribers(30)
    with transaction() as session:
        wanted = session.scalar(select(Subscriber.email_key).order_by(Subscriber.id.desc()))
        part = wanted.split("@")[0][-6:].upper()  # any case, a part in the middle
        found = queries.search(session, email=part)
        assert [s.email_key for s in found] == [wanted]
        assert queries.search(session, email="100%_") == []  # LIKE's wildcards are letters
        if clean.backend == "postgresql":  # the index can answer it, not a read of every row
            # (on 30 rows reading them is cheaper: leave the planner only the index's way)
            session.execute(text("SET LOCAL enable_seqscan = off"))
            session.execute(text("SET LOCAL enable_indexscan = off"))
            statement = queries.search_query(part, None, 0, 50).compile(
                session.get_bind(), compile_kwargs={"literal_binds": True})
            plan = "\n".join(session.scalars(text(f"EXPLAIN {statement}")))
            assert "ix_subscriber_email_key_trgm" in plan, plan
