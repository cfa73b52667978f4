"""The registry of message types (mailer.emails.kinds.TYPES): every entry complete, and each
kind's wire spellings issued and read back through the entry."""

from __future__ import annotations

import pytest

from mailer import tasks
from mailer.config import IdentitySettings
from mailer.emails.kinds import (
    TYPES,
    MessageKind,
    Ties,
    of_message_id_prefix,
    of_verp_letter,
    type_of,
)
from mailer.paths import templates_dir

IDENTITY = IdentitySettings()  # the stack's sending and bounce domains (the defaults)
KEYS = [b"message-types-registry-" * 3]  # what a Settings.all_secrets would hand in


def test_every_kind_has_one_entry_and_every_entry_its_template_folder() -> None:
    assert set(TYPES) == set(MessageKind)
    for kind, entry in TYPES.items():
        assert entry.kind is kind and type_of(kind.value) is entry
        folder = templates_dir() / "email" / entry.template
        for name in ("subject.txt", "body.txt", "body.html"):
            assert (folder / name).is_file(), (kind, folder / name)
        assert entry.queue is None or entry.queue in tasks.QUEUES, kind
        assert entry.ties in set(Ties) and entry.what, kind
    # The bulk sender's queue is the bulk kinds' alone.
    assert {e.kind for e in TYPES.values() if e.queue == tasks.BULK} <= {
        e.kind for e in TYPES.values() if e.bulk}


def test_the_wire_spellings_are_distinct_and_each_kind_round_trips() -> None:
    from mailer.emails.message import message_id, parse_message_id
    from mailer.emails.verp import parse_return_path, return_path

    letters = [e.verp for e in TYPES.values() if e.verp]
    prefixes = [e.message_id for e in TYPES.values()]
    assert len(set(letters)) == len(letters) and len(set(prefixes)) == len(prefixes)
    for kind, entry in TYPES.items():
        mid = message_id(kind, 41, 7, identity=IDENTITY, keys=KEYS)
        parsed = parse_message_id(mid, keys=KEYS)
        assert parsed == (entry.message_id, ["41", "7"]), (kind, mid)
        assert of_message_id_prefix(parsed[0]) is kind
        altered = mid.replace(".41.", ".42.")
        assert parse_message_id(altered, keys=KEYS) is None  # not ours
        if entry.verp is None:
            with pytest.raises(KeyError):
                return_path(kind, 41, identity=IDENTITY, keys=KEYS)
            continue
        path = return_path(kind, 123456, identity=IDENTITY, keys=KEYS)
        assert path.startswith(f"bounces+{entry.verp}"), path
        token = parse_return_path(path, keys=KEYS)
        assert token and token.kind is kind and token.id == 123456, (kind, path)
        assert of_verp_letter(entry.verp) is kind
        forged = path.replace(f"+{entry.verp}", f"+{entry.verp}1", 1)
        assert parse_return_path(forged, keys=KEYS) is False


def test_a_letter_no_entry_has_is_no_token() -> None:
    from mailer.emails.verp import parse_return_path, return_path

    used = {e.verp for e in TYPES.values() if e.verp}
    unused = next(c for c in "abefghijklmnopqrsuvwxyz" if c not in used)
    path = return_path(MessageKind.delivery, 5, identity=IDENTITY, keys=KEYS)
    assert parse_return_path(path.replace("+d", f"+{unused}", 1), keys=KEYS) is None
