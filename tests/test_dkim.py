"""DKIM: what the SMTP server receives verifies, and the signature covers the headers the
mailbox providers need (List-Unsubscribe and List-Unsubscribe-Post among them)."""

from __future__ import annotations

import base64
import re

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import wait_for
from tests.support.factories import edition_state, make_edition, make_subscribers


def _key_pair(tmp_path):  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return path, record


def test_newsletters_are_signed_with_the_one_click_headers(rig, tmp_path) -> None:
    from mailer.config import get_settings
    from mailer.db import transaction
    from mailer.delivery import service as sending

    key_path, record = _key_pair(tmp_path)
    make_subscribers(3)
    edition_id = make_edition()
    rig.worker(MAILER_DKIM_SELECTOR="mail2026", MAILER_DKIM_DOMAIN="cep-probation.example.org",
               MAILER_DKIM_PRIVATE_KEY_PATH=str(key_path))
    with transaction() as session:
        sending.start_send(session, edition_id, by="test", settings=get_settings())
    wait_for(lambda: edition_state(edition_id) == "sent", timeout=60, what="the send")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.cep-probation.example.org."
        return record

    for mail in rig.stack.smtp.messages:
        assert mail.data.startswith(b"DKIM-Signature:")
        assert dkim.verify(mail.data, dnsfunc=dns)
        header = mail.data.split(b"\r\n\r\n", 1)[0].decode()
        signed = re.search(r"h=([^;]+);", header.replace("\r\n", "").replace(" ", "")).group(1)
        names = signed.lower().split(":")
        for required in ("from", "to", "subject", "date", "message-id", "list-id",
                         "list-unsubscribe", "list-unsubscribe-post"):
            assert required in names
        tampered = mail.data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                                     b"List-Unsubscribe-Post: nothing")
        assert not dkim.verify(tampered, dnsfunc=dns)
