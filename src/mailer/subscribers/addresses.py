"""Email addresses: validated with email-validator, stored normalised, keyed canonically."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from mailer.config import get_settings
from mailer.tokens import address_hash


class InvalidAddress(ValueError):
    """The address cannot be mailed; the message says why in words a reader understands."""


def normalise(raw: str) -> tuple[str, str]:
    """``raw`` → (address to store and send to, canonical key).

    The key folds case and Unicode compatibility forms, so ``Anna@Example.org`` and
    ``anna@example.org`` (or a full-width variant) are one subscriber.
    """
    if not isinstance(raw, str):
        raise InvalidAddress("Please enter an email address.")
    if any(ch in raw for ch in "\r\n\x00"):
        raise InvalidAddress("An email address cannot contain line breaks.")
    raw = raw.strip()
    if not raw:
        raise InvalidAddress("Please enter an email address.")
    if len(raw) > 320:
        raise InvalidAddress("That email address is too long.")
    try:
        valid = validate_email(
            unicodedata.normalize("NFC", raw),
            check_deliverability=get_settings().check_deliverability,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(f"That is not a valid email address: {exc}") from None
    local = unicodedata.normalize("NFKC", valid.local_part).casefold()
    key = f"{local}@{valid.ascii_domain.lower()}"
    return valid.normalized, key


def key_hash(raw: str) -> str:
    """The suppression hash of an address as entered (raises InvalidAddress)."""
    return address_hash(normalise(raw)[1])
