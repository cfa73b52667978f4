"""Signed tokens: links and return paths that cannot be forged without the secret key.

Every token is a public value plus an HMAC-SHA256 over it, keyed with the secret and a
purpose string, so a token made for one purpose (unsubscribe) is worthless for another
(confirm). Older secrets in ``MAILER_OLD_SECRET_KEYS`` still verify, for key rotation.

The keys are handed in (``keys=``, ``Settings.all_secrets``: the first one signs, every one
verifies): this module reads no settings, so ``mailer bounces classify``, which reads its few
values without pydantic, checks a token with the same code as the service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence


def _mac(key: bytes, purpose: str, value: str) -> bytes:
    message = f"{purpose}\x00{value}".encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(raw: bytes, length: int) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")[:length]


def _b32(raw: bytes, length: int) -> str:
    # Lowercase base32: survives mail systems that change the case of local parts.
    return base64.b32encode(raw).decode().lower().rstrip("=")[:length]


def sign(purpose: str, value: str, length: int = 32, alphabet: str = "b64", *,
         keys: Sequence[bytes]) -> str:
    """The signature of ``value`` for ``purpose``, with the first of ``keys``."""
    raw = _mac(keys[0], purpose, value)
    return _b32(raw, length) if alphabet == "b32" else _b64(raw, length)


def verify(purpose: str, value: str, signature: str, alphabet: str = "b64", *,
           keys: Sequence[bytes]) -> bool:
    """Is ``signature`` that of ``value`` for ``purpose`` with one of ``keys``?"""
    if not signature or len(signature) < 16:
        return False
    # Compared as bytes: compare_digest refuses a str with anything but ASCII in it, and a
    # signature is whatever a stranger put into a URL. (surrogatepass: a lone surrogate
    # must not raise either.)
    given = signature.encode("utf-8", "surrogatepass")
    for key in keys:
        raw = _mac(key, purpose, value)
        expected = _b32(raw, len(signature)) if alphabet == "b32" else _b64(raw, len(signature))
        if hmac.compare_digest(expected.encode(), given):
            return True
    return False


def random_id(nbytes: int = 16) -> str:
    """A random public identifier (128 bits by default), hex so it is safe anywhere."""
    return secrets.token_hex(nbytes)


def address_hash(email_key: str) -> str:
    """What suppressions keep of an address: sha256 of its canonical form."""
    return hashlib.sha256(email_key.encode()).hexdigest()
