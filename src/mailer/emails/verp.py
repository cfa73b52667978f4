"""VERP return paths: ``bounces+<kind><id>-<signature>@<bounce domain>``.

The token names what the message was (its :class:`~mailer.emails.kinds.MessageKind` by the
letter its registry entry gives: a newsletter delivery ``d``, a confirmation mail ``c``, a
test copy ``t``) and its row id, signed with the secret key. It holds no address,
is lowercase (mail systems may fold the case of local parts) and keeps the local part
well under 64 octets. A bounce to a token whose signature fails is backscatter or forgery:
it suppresses nobody.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailer.emails.kinds import VERP_LETTER, MessageKind, of_verp_letter, verp_letter
from mailer.tokens import sign, verify

if TYPE_CHECKING:  # reading a token loads no settings (mailer.cli.quick)
    from mailer.config import IdentitySettings

_PURPOSE = "verp"
_SIG_LEN = 16  # 80 bits of lowercase base32
_TOKEN = re.compile(rf"^bounces\+([{''.join(VERP_LETTER.values())}])([0-9a-z]{{1,13}})"
                    r"-([a-z2-7]{16})@", re.IGNORECASE)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass(frozen=True)
class VerpToken:
    kind: MessageKind  # a kind whose registry entry has a VERP letter
    id: int


def return_path(kind: MessageKind | str, row_id: int, *, identity: IdentitySettings,
                keys: Sequence[bytes]) -> str:
    """The return path of the row ``row_id`` of ``kind``, at ``identity.bounce_domain``,
    signed with the first of ``keys`` (``Settings.all_secrets``)."""
    value = f"{verp_letter(kind)}{_base36(row_id)}"
    signature = sign(_PURPOSE, value, _SIG_LEN, alphabet="b32", keys=keys)
    return f"bounces+{value}-{signature}@{identity.bounce_domain}"


def parse_return_path(address: str, *, keys: Sequence[bytes]) -> VerpToken | None | bool:
    """The token in ``address``: a VerpToken, None when there is none, False when forged.
    ``keys``: the secrets it is checked with (``Settings.all_secrets``)."""
    match = _TOKEN.match(address.strip().strip("<>"))
    if not match:
        return None
    letter, number, signature = (g.lower() for g in match.groups())
    if not verify(_PURPOSE, f"{letter}{number}", signature, alphabet="b32", keys=keys):
        return False
    return VerpToken(kind=of_verp_letter(letter), id=int(number, 36))
