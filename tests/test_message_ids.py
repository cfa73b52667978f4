"""Message-IDs and VERP tokens are signed with the secret key: deterministic per message,
verifiable after a key rotation, impossible to make without the key, within RFC 5322
and the 64-octet local part."""

from __future__ import annotations

import re

from mailer.config import IdentitySettings
from mailer.emails.message import looks_like_ours, message_id, parse_message_id
from mailer.emails.verp import VerpToken, parse_return_path, return_path

#: The secrets each side is handed (``Settings.all_secrets``: the first signs).
OLD, NEW = [b"the-key-before-the-rotation-0001"], [b"the-key-after-the-rotation-00002"]
ROTATED = NEW + OLD  # the new key signs, the old one still verifies

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)
DOMAIN = IDENTITY.sending_domain


def test_a_message_id_is_deterministic_signed_and_standard() -> None:
    made = message_id("nl", 12, 3456, identity=IDENTITY, keys=OLD)
    assert made == message_id("nl", 12, 3456, identity=IDENTITY, keys=OLD)  # a retry keeps it
    assert made != message_id("nl", 12, 3457, identity=IDENTITY, keys=OLD)
    # RFC 5322 msg-id: "<" dot-atom-text "@" domain ">"
    assert re.fullmatch(r"<[a-z0-9]+(\.[a-z0-9]+)+@[a-z0-9.-]+>", made), made
    assert len(made) < 78
    assert parse_message_id(made, keys=OLD) == ("nl", ["12", "3456"])
    # case folded on the way
    assert parse_message_id(made.upper(), keys=OLD) == ("nl", ["12", "3456"])


def test_a_message_id_cannot_be_made_without_the_key() -> None:
    genuine = message_id("nl", 12, 3456, identity=IDENTITY, keys=OLD)
    signature = genuine[1:].split("@")[0].rsplit(".", 1)[1]
    assert len(signature) * 5 >= 128  # base32: 5 bits a character
    for forged in (genuine.replace(".3456.", ".3457."),  # the next delivery id
                   "<nl.12.3456@cep-probation.example.org>",
                   f"<nl.12.3456.{signature[:-1]}@cep-probation.example.org>",
                   "<nl.12.3456.5d1f0c9e2b7a48e6a1c3f2d4@cep-probation.example.org>"):
        assert parse_message_id(forged, keys=OLD) is None, forged
        assert looks_like_ours(forged, sending_domain=DOMAIN)
    assert not looks_like_ours("<abc.1@elsewhere.example>", sending_domain=DOMAIN)
    assert not looks_like_ours(genuine, sending_domain="elsewhere.example")
    made_by_someone_else = message_id("nl", 12, 3456, identity=IDENTITY, keys=NEW)
    assert parse_message_id(made_by_someone_else, keys=OLD) is None


def test_ids_and_tokens_made_before_a_key_rotation_still_verify() -> None:
    mid = message_id("confirm", 77, identity=IDENTITY, keys=OLD)
    verp = return_path("delivery", 4242, identity=IDENTITY, keys=OLD)
    assert parse_message_id(mid, keys=ROTATED) == ("confirm", ["77"])
    assert parse_return_path(verp, keys=ROTATED) == VerpToken("delivery", 4242)
    # new mail is signed with the new key
    assert message_id("confirm", 77, identity=IDENTITY, keys=ROTATED) != mid
    # the old key dropped: what it signed is no longer believed
    assert parse_message_id(mid, keys=NEW) is None
    assert parse_return_path(verp, keys=NEW) is False


def test_verp_tokens_are_long_enough_and_fit_the_local_part() -> None:
    verp = return_path("delivery", 2**40, identity=IDENTITY, keys=OLD)
    local = verp.split("@")[0]
    signature = local.rsplit("-", 1)[1]
    assert len(signature) * 5 >= 80 and len(local) <= 64
    assert parse_return_path(verp.replace(signature, "a" * len(signature)), keys=OLD) is False
