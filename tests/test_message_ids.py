"""Message-IDs and VERP tokens are signed with the secret key: deterministic per message,
verifiable after a key rotation, impossible to make without the key, within RFC 5322
and the 64-octet local part."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from mailer.config import IdentitySettings, reset_settings
from mailer.emails.message import looks_like_ours, message_id, parse_message_id
from mailer.emails.verp import VerpToken, parse_return_path, return_path

OLD_KEY, NEW_KEY = "the-key-before-the-rotation-0001", "the-key-after-the-rotation-00002"


IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)


@pytest.fixture
def keys(monkeypatch) -> Iterator[object]:  # type: ignore[no-untyped-def]
    def use(secret: str, old: str = "") -> None:
        monkeypatch.setenv("MAILER_SECRET_KEY", secret)
        monkeypatch.setenv("MAILER_OLD_SECRET_KEYS", f'["{old}"]' if old else "[]")
        reset_settings()

    use(OLD_KEY)
    yield use
    monkeypatch.undo()
    reset_settings()


def test_a_message_id_is_deterministic_signed_and_standard(keys) -> None:
    made = message_id("nl", 12, 3456, identity=IDENTITY)
    assert made == message_id("nl", 12, 3456, identity=IDENTITY)  # a retry keeps its id
    assert made != message_id("nl", 12, 3457, identity=IDENTITY)
    # RFC 5322 msg-id: "<" dot-atom-text "@" domain ">"
    assert re.fullmatch(r"<[a-z0-9]+(\.[a-z0-9]+)+@[a-z0-9.-]+>", made), made
    assert len(made) < 78
    assert parse_message_id(made) == ("nl", ["12", "3456"])
    assert parse_message_id(made.upper()) == ("nl", ["12", "3456"])  # case folded on the way


def test_a_message_id_cannot_be_made_without_the_key(keys) -> None:
    genuine = message_id("nl", 12, 3456, identity=IDENTITY)
    signature = genuine[1:].split("@")[0].rsplit(".", 1)[1]
    assert len(signature) * 5 >= 128  # base32: 5 bits a character
    for forged in (genuine.replace(".3456.", ".3457."),  # the next delivery id
                   "<nl.12.3456@cep-probation.example.org>",
                   f"<nl.12.3456.{signature[:-1]}@cep-probation.example.org>",
                   "<nl.12.3456.5d1f0c9e2b7a48e6a1c3f2d4@cep-probation.example.org>"):
        assert parse_message_id(forged) is None, forged
        assert looks_like_ours(forged)
    assert not looks_like_ours("<abc.1@elsewhere.example>")
    keys(NEW_KEY)
    made_by_someone_else = message_id("nl", 12, 3456, identity=IDENTITY)
    keys(OLD_KEY)
    assert parse_message_id(made_by_someone_else) is None


def test_ids_and_tokens_made_before_a_key_rotation_still_verify(keys) -> None:
    mid = message_id("confirm", 77, identity=IDENTITY)
    verp = return_path("delivery", 4242, identity=IDENTITY)
    keys(NEW_KEY, old=OLD_KEY)
    assert parse_message_id(mid) == ("confirm", ["77"])
    assert parse_return_path(verp) == VerpToken("delivery", 4242)
    # new mail is signed with the new key
    assert message_id("confirm", 77, identity=IDENTITY) != mid
    keys(NEW_KEY)  # the old key dropped: what it signed is no longer believed
    assert parse_message_id(mid) is None
    assert parse_return_path(verp) is False


def test_verp_tokens_are_long_enough_and_fit_the_local_part(keys) -> None:
    verp = return_path("delivery", 2**40, identity=IDENTITY)
    local = verp.split("@")[0]
    signature = local.rsplit("-", 1)[1]
    assert len(signature) * 5 >= 80 and len(local) <= 64
    assert parse_return_path(verp.replace(signature, "a" * len(signature))) is False
