"""The rules written once and used in several places: the retry back-off, what is loopback."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer.backoff import BOUNCE_PROCESSING, CONFIRMATION_MAIL, REVIEW_MAIL, Backoff
from mailer.bounces.mailbox import parse_mailbox_url
from mailer.config import IdentitySettings, is_loopback, parse_smtp_url

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)


def test_the_wait_doubles_from_the_base_up_to_the_cap_within_the_jitter() -> None:
    rule = Backoff(base=30, cap=3600)
    for retry, expected in [(0, 30), (1, 60), (2, 120), (5, 960), (7, 3600), (20, 3600)]:
        waits = [rule.seconds(retry) for _ in range(200)]
        assert all(0.8 * expected <= w <= 1.2 * expected for w in waits), (retry, waits)
        assert len(set(waits)) > 1  # spread: retries that failed together come back apart
    assert 0.8 * 30 <= rule.seconds(-1) <= 1.2 * 30  # never less than the base


def test_the_task_retries_keep_their_waits() -> None:
    assert (CONFIRMATION_MAIL.base, CONFIRMATION_MAIL.cap) == (30, 3600)
    assert (BOUNCE_PROCESSING.base, BOUNCE_PROCESSING.cap) == (30, 3600)
    assert (REVIEW_MAIL.base, REVIEW_MAIL.cap) == (60, 3600)


def test_a_delivery_waits_the_base_after_its_first_attempt() -> None:
    from mailer.config import SendingSettings
    from mailer.delivery.ledger import backoff

    sending = SendingSettings(retry_base_seconds=60, retry_max_seconds=600)
    assert dt.timedelta(seconds=48) <= backoff(1, sending) <= dt.timedelta(seconds=72)
    assert dt.timedelta(seconds=96) <= backoff(2, sending) <= dt.timedelta(seconds=144)
    assert backoff(30, sending) <= dt.timedelta(seconds=720)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.localdomain",
                                  "mail.localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["mail.example.org", "10.0.0.1", "192.168.1.1", "::2",
                                  "localhost.example.org", "notlocalhost", ""])
def test_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["LocalHost", "127.0.0.2", "[::1]", "localhost.localdomain"])
def test_the_mailbox_and_the_relay_agree_on_loopback(host: str) -> None:
    # Plain text by default to this machine only, for the SMTP relay and the bounce
    # mailbox alike (the mailbox had a rule of its own that knew only "localhost").
    assert parse_mailbox_url(f"imap://u:p@{host}").tls == "none"
    assert parse_smtp_url(f"smtp://{host}:25").tls == "none"
    assert parse_mailbox_url("imap://u:p@mail.example.org").tls == "starttls"
    assert parse_smtp_url("smtp://mail.example.org:25").tls == "starttls"


def test_one_name_per_kind_in_code_and_the_wire_spellings_kept() -> None:
    from mailer.emails.kinds import MessageKind, of_message_id_prefix
    from mailer.emails.message import message_id, parse_message_id
    from mailer.emails.verp import parse_return_path, return_path

    keys = [b"one-name-per-kind-" * 3]
    # Mail already sent carries these spellings: they must not change.
    assert message_id(MessageKind.delivery, 12, 3456, identity=IDENTITY, keys=keys) == \
        message_id("nl", 12, 3456, identity=IDENTITY, keys=keys)
    assert message_id(MessageKind.delivery, 12, 3456, identity=IDENTITY,
                      keys=keys).startswith("<nl.12.3456.")
    assert message_id(MessageKind.confirmation, 7, identity=IDENTITY,
                      keys=keys).startswith("<confirm.7.")
    assert message_id(MessageKind.test, 3, 0, identity=IDENTITY,
                      keys=keys).startswith("<test.3.0.")
    assert message_id(MessageKind.review, 3, 1, identity=IDENTITY,
                      keys=keys).startswith("<review.3.1.")
    for kind, letter in [(MessageKind.delivery, "d"), (MessageKind.confirmation, "c"),
                         (MessageKind.test, "t")]:
        path = return_path(kind, 35, identity=IDENTITY, keys=keys)
        assert path.startswith(f"bounces+{letter}z-"), path
        token = parse_return_path(path, keys=keys)
        assert token and token.kind is kind and token.id == 35
    parsed = parse_message_id(message_id(MessageKind.delivery, 1, 2, identity=IDENTITY,
                                         keys=keys), keys=keys)
    assert parsed is not None and of_message_id_prefix(parsed[0]) is MessageKind.delivery
    assert of_message_id_prefix("confirm") is MessageKind.confirmation
    assert of_message_id_prefix("made-up") is None
