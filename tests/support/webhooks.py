"""Provider webhooks in the tests: the web app served in this process (so a test can hand
it an SNS certificate fetcher), and the providers' side of each signature, made with keys
the tests generate (no network: the "SNS certificate" is a self-signed one served by the
fetcher for an https://sns.<region>.amazonaws.com URL)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mailer.config import reset_settings
from tests.support.processes import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "hook-password-9c1f"


def fixture(name: str, **values: str) -> str:
    text = (FIXTURES / name).read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


# --- SNS (Amazon SES) ------------------------------------------------------------------------


@dataclass
class SNSKeys:
    key: rsa.RSAPrivateKey
    pem: bytes
    fetched: list[str] = field(default_factory=list)

    def get(self, url: str) -> bytes:
        """What the fetcher does instead of HTTPS: the certificate, or a confirmation."""
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse/>"
        raise httpx.ConnectError(f"no network in tests: {url}")

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        """Sign like SNS: "Name\\nvalue\\n" for the type's fields present, in this order."""
        if message["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                     "Type"]
        text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "SignatureVersion": version,
                "Signature": base64.b64encode(signature).decode(), "SigningCertURL": CERT_URL}


def make_sns_keys() -> SNSKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return SNSKeys(key, cert.public_bytes(serialization.Encoding.PEM))


def sns_notification(message: str, *, message_id: str = "f3b4c1de-7a59-5b0c-9e4d-2c1a0f9e8d7c",
                     topic: str = TOPIC, timestamp: dt.datetime | None = None) -> dict[str, Any]:
    when = timestamp or dt.datetime.now(dt.UTC)
    return {
        "Type": "Notification", "MessageId": message_id, "TopicArn": topic,
        "Message": message, "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }


# --- SendGrid and Mailgun -------------------------------------------------------------------


def make_sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, base64.b64encode(der).decode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp}


def mailgun_sign(payload_text: str, *, key: str = MAILGUN_KEY, token: str | None = None,
                 timestamp: int | None = None) -> bytes:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    token = token or hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    payload = json.loads(payload_text)
    payload["signature"] = {"timestamp": stamp, "token": token, "signature": signature}
    return json.dumps(payload).encode()


# --- the web app in this process ------------------------------------------------------------


@dataclass
class WebhookSite:
    url: str
    sns: SNSKeys
    sendgrid_key: ec.EllipticCurvePrivateKey

    def post(self, provider: str, body: bytes | str, headers: dict[str, str] | None = None,
             auth: tuple[str, str] | None = None) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return httpx.post(f"{self.url}/webhooks/{provider}", content=content,
                          headers=headers or {"Content-Type": "application/json"},
                          auth=auth, timeout=30)


@functools.cache
def webhook_keys() -> tuple[SNSKeys, ec.EllipticCurvePrivateKey, str]:
    """Keys made once per test run (an RSA key takes a moment)."""
    sns = make_sns_keys()
    sendgrid_key, sendgrid_public = make_sendgrid_key()
    return sns, sendgrid_key, sendgrid_public


@contextlib.contextmanager
def serve_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSite]:
    """The web app with every provider configured, served by uvicorn in a thread here."""
    from mailer.bounces.webhooks import ses
    from mailer.web.app import create_app

    sns, sendgrid_key, sendgrid_public = webhook_keys()
    sns.fetched.clear()
    monkeypatch.setenv("MAILER_SES_TOPIC_ARNS", json.dumps([TOPIC]))
    monkeypatch.setenv("MAILER_SENDGRID_PUBLIC_KEY", sendgrid_public)
    monkeypatch.setenv("MAILER_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("MAILER_POSTMARK_WEBHOOK_USER", POSTMARK_USER)
    monkeypatch.setenv("MAILER_POSTMARK_WEBHOOK_PASSWORD", POSTMARK_PASSWORD)
    reset_settings()
    previous = ses.use_fetcher(ses.SNSFetcher(get=sns.get))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "web app did not start"
        time.sleep(0.02)
    try:
        yield WebhookSite(f"http://127.0.0.1:{port}", sns, sendgrid_key)
    finally:
        server.should_exit = True
        thread.join(10)
        ses.use_fetcher(previous)
        monkeypatch.undo()
        reset_settings()
