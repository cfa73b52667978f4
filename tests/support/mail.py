"""Reading messages as the SMTP server received them."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from tests.support.smtp_server import Received

LINK = re.compile(r"https?://[^\s<>\"')\]]+")


def parse(received: Received | bytes) -> EmailMessage:
    raw = received.data if isinstance(received, Received) else received
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def parts(msg: EmailMessage) -> tuple[str, str]:
    """(text/plain, text/html) of a multipart/alternative message."""
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def links(text: str) -> list[str]:
    return [u.rstrip(".,;") for u in LINK.findall(text)]
