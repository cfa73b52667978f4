"""Email addresses: validated with email-validator, stored normalised, keyed canonically.

What is stored is the address we can send to: the local part as typed, the domain in its
ASCII (IDNA) form, because a message's To header and the SMTP envelope must be ASCII
unless every server on the way speaks SMTPUTF8. For the same reason an address whose part
before the @ is not ASCII is refused at sign-up with a clear message, rather than accepted
and never delivered.

The key that makes one subscriber of many spellings folds compatibility forms (a
full-width ``ａｎｎａ@ｅｘａｍｐｌｅ.org`` typed on a phone is ``anna@example.org``), the
case of the local part and the Unicode/ASCII forms of the domain.
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from mailer.tokens import address_hash

MAX_LENGTH = 320


class InvalidAddress(ValueError):
    """The address cannot be mailed; the message says why in words a reader understands."""


def normalise(raw: str, *, check_deliverability: bool = False) -> tuple[str, str]:
    """``raw`` → (address to store and send to, canonical key). Raises InvalidAddress.

    ``check_deliverability`` also asks DNS whether the domain takes mail: an address being
    taken in (a sign-up, an import) passes ``SignupSettings.check_deliverability``; looking
    up one already known never needs it."""
    if not isinstance(raw, str):
        raise InvalidAddress("Please enter an email address.")
    if any(ch in raw for ch in "\r\n\x00"):
        raise InvalidAddress("An email address cannot contain line breaks.")
    # NFKC first: full-width letters and other compatibility forms become the characters
    # they stand for, so every spelling of one address validates to the same result.
    raw = unicodedata.normalize("NFKC", raw).strip()
    if not raw:
        raise InvalidAddress("Please enter an email address.")
    if len(raw) > MAX_LENGTH:
        raise InvalidAddress("That email address is too long.")
    try:
        valid = validate_email(
            raw,
            check_deliverability=check_deliverability,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(_explain(str(exc))) from None
    assert valid.ascii_email is not None  # always set when SMTPUTF8 is not allowed
    key = f"{valid.local_part.lower()}@{valid.ascii_domain.lower()}"
    return valid.ascii_email, key


def _explain(reason: str) -> str:
    if "Internationalized characters before the @-sign" in reason:
        return ("That address has letters before the @ that not every mail system can "
                "deliver to. Please use another address.")
    return f"That is not a valid email address. {reason}"


def key_hash(raw: str) -> str:
    """The suppression hash of an address as entered (raises InvalidAddress)."""
    return address_hash(normalise(raw)[1])
