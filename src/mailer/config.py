"""Settings: one typed object read from ``MAILER_*`` environment variables (and ``.env``).

Everything the service can be told lives here, with a default that works on a developer's
machine (SQLite under ``var/``, Redis on localhost, the SMTP catcher on port 1025).
Outside development the service refuses to start with the default secret key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-this-is-the-development-secret"  # noqa: S105 - refused outside development

#: The folder for local state (SQLite database, outbox, logs) when nothing else is configured.
VAR_DIR = Path(os.environ.get("MAILER_VAR_DIR", Path.cwd() / "var"))

DEFAULT_CATEGORIES = [
    "News",
    "CEP Events",
    "Criminal Justice",
    "Mental Health",
    "Human rights and ethics",
    "Partners",
    "Reading corner",
    "Uncategorized",
]


@dataclass(frozen=True)
class SMTPTarget:
    """Where and how to reach the SMTP server, parsed from ``MAILER_SMTP_URL``."""

    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    username: str | None
    password: str | None

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str) -> SMTPTarget:
    """``smtp://user:pass@host:port?tls=starttls`` → :class:`SMTPTarget`.

    ``smtps://`` means implicit TLS (port 465). ``smtp://`` means STARTTLS, except for a
    loopback host where plaintext is the default. Plaintext to any other host must be asked
    for with ``?tls=none`` (a local test server such as Mailpit in docker-compose).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL must start with smtp:// or smtps://, got {url!r}")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"SMTP URL has no host: {url!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "smtps":
        tls = "implicit"
    else:
        tls = query.get("tls") or ("none" if _is_loopback(host) else "starttls")
    if tls not in ("none", "starttls", "implicit"):
        raise ValueError(f"SMTP URL tls= must be none, starttls or implicit, got {tls!r}")
    default_port = {"implicit": 465, "starttls": 587, "none": 25}[tls]
    return SMTPTarget(
        host=host,
        port=parts.port or default_port,
        tls=tls,  # type: ignore[arg-type]
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "test", "production"] = "development"

    # --- where things are -------------------------------------------------------------
    database_url: str = Field(default_factory=lambda: f"sqlite:///{VAR_DIR / 'mailer.db'}")
    redis_url: str = "redis://127.0.0.1:6379/0"
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_timeout: float = 30.0
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    #: Older secrets still accepted when verifying tokens (rotation without breaking links).
    old_secret_keys: list[SecretStr] = []
    outbox_dir: Path = VAR_DIR / "outbox"

    # --- who we are -------------------------------------------------------------------
    from_address: str = "CEP Newsletter <newsletter@cep-probation.example.org>"
    reply_to: str | None = None
    postal_address: str = ("CEP, Confederation of European Probation, Postbus 8284, "
                           "3503 RG Utrecht, The Netherlands")
    organisation_name: str = "CEP – Confederation of European Probation"
    list_name: str = "CEP Newsletter"
    list_id: str = "newsletter.cep-probation.example.org"
    #: Domain of the VERP return path: bounces+TOKEN@bounce_domain.
    bounce_domain: str = "bounces.cep-probation.example.org"
    website_url: str = "https://www.cep-probation.org"
    timezone: str = "Europe/Amsterdam"

    # --- consent --------------------------------------------------------------------
    consent_version: str = "2026-01"
    consent_text: str = (
        "I agree that CEP may send me its bi-monthly email newsletter and keep my name and "
        "address for that purpose. I can unsubscribe at any time with the link in every mail."
    )
    check_deliverability: bool = False
    confirmation_ttl_days: int = 7
    purge_pending_after_days: int = 14
    signup_limit_per_ip_per_hour: int = 20
    confirmation_mails_per_address_per_day: int = 1

    # --- articles and editions ---------------------------------------------------------
    feed_urls: list[str] = []
    feed_poll_minutes: int = 60
    #: Feeds are fetched from public addresses only; these host names and IP networks
    #: (CIDR) may be fetched although they are private, loopback or link-local (a feed on
    #: the intranet; the tests' loopback servers). JSON list, e.g. '["10.1.2.0/24"]'.
    feed_allowed_hosts: list[str] = []
    #: One deadline for a whole fetch by URL, redirects and a slow server included.
    feed_fetch_deadline_seconds: float = 20.0
    feed_max_bytes: int = 10 * 1024 * 1024
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    html_budget_bytes: int = 100 * 1024
    #: When beat drafts the next edition: minute hour day-of-month month day-of-week in
    #: ``timezone``; "off" for never. Celery requires the day of the month *and* the day of
    #: the week to match (cron takes either), so the default is the first Tuesday of every
    #: other month at 09:00.
    edition_schedule_cron: str = "0 9 1-7 */2 2"

    # --- sending ------------------------------------------------------------------------
    batch_size: int = 500
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    #: Messages per second across all workers (0: no limit).
    rate_limit_per_second: float = 0.0
    #: Messages per second to any one recipient domain across all workers (0: no limit).
    domain_rate_limit_per_second: float = 50.0
    #: A delivery claimed by a worker that has not finished within this many seconds is
    #: considered abandoned (the worker died) and queued again by the sweeper.
    lease_seconds: float = 300.0
    #: Queued deliveries untouched this long are queued again (a lost Redis message).
    requeue_after_seconds: float = 120.0
    sweep_every_seconds: float = 30.0
    breaker_window: int = 200
    breaker_hard_bounce_rate: float = 0.10
    breaker_policy_rate: float = 0.05
    complaint_alert_rate: float = 0.001
    complaint_stop_rate: float = 0.003
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_path: Path | None = None

    # --- bounces --------------------------------------------------------------------------
    #: The largest bounce mail taken in (server, mailbox, import). Our own messages are at
    #: most ~260 KB (a 100 KB HTML budget plus its text part, quoted-printable); a bounce
    #: that returns one whole and base64-encoded stays under ~400 KB. 1 MiB leaves room.
    bounce_max_bytes: int = 1024 * 1024
    #: The bounce server's limits (``mailer bounces serve``; see mailer.bounces.server).
    bounce_max_connections: int = 100
    bounce_max_connections_per_ip: int = 10
    bounce_messages_per_ip_per_minute: int = 120
    bounce_max_inflight_bytes: int = 32 * 1024 * 1024
    bounce_timeout_seconds: float = 120.0
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 30
    imap_url: str | None = None
    imap_folder: str = "INBOX"
    imap_processed_folder: str | None = None
    pop3_url: str | None = None
    bounce_poll_minutes: int = 5
    ses_topic_arns: list[str] = []
    sendgrid_public_key: str | None = None
    mailgun_signing_key: SecretStr | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    #: A signed webhook timestamp older than this is refused as a replay (SNS retries a
    #: failed notification with its original timestamp for up to about an hour).
    webhook_max_age_seconds: int = 3600

    # --- staff and ops ------------------------------------------------------------------
    session_hours: int = 12
    #: A staff session nobody used for this long is over (each request moves it on).
    session_idle_minutes: int = 60
    #: Login throttles (see staff/throttle.py): failures allowed from one IP address, and
    #: from one address for one account, before each further one makes it wait; the first
    #: wait, doubling up to the longest; how long the failures are remembered.
    login_free_attempts_per_ip: int = 20
    login_free_attempts_per_account_and_ip: int = 5
    login_backoff_seconds: float = 30.0
    login_backoff_max_seconds: float = 3600.0
    login_failure_window_minutes: int = 60
    metrics_token: SecretStr | None = None
    metrics_networks: list[str] = ["127.0.0.0/8", "::1/128"]
    #: How often each Celery worker writes its heartbeat to Redis; a worker is alive while
    #: its last one is younger than three intervals.
    worker_heartbeat_seconds: float = 10.0
    #: A queue that held work this long with no worker touching it raises an alert.
    queue_stall_seconds: float = 300.0
    #: Policy rejections within this many hours raise an alert.
    alert_window_hours: int = 24
    #: Timeout of each check of /readyz (database, Redis, SMTP).
    readiness_timeout_seconds: float = 3.0

    @field_validator("base_url", "website_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp(cls, value: str) -> str:
        parse_smtp_url(value)
        return value

    @field_validator("from_address")
    @classmethod
    def _check_from(cls, value: str) -> str:
        _, addr = parseaddr(value)
        if "@" not in addr:
            raise ValueError(f"MAILER_FROM_ADDRESS must hold one address, got {value!r}")
        return value

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.env != "development" and self.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise ValueError(
                "MAILER_SECRET_KEY is the development default; set a long random secret "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))') "
                "or run with MAILER_ENV=development"
            )
        if len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("MAILER_SECRET_KEY must be at least 16 characters")
        return self

    # --- derived values -------------------------------------------------------------------
    @property
    def smtp(self) -> SMTPTarget:
        return parse_smtp_url(self.smtp_url)

    @property
    def from_email(self) -> str:
        return parseaddr(self.from_address)[1]

    @property
    def sending_domain(self) -> str:
        return self.from_email.rsplit("@", 1)[1]

    @property
    def secret(self) -> bytes:
        return self.secret_key.get_secret_value().encode()

    @property
    def all_secrets(self) -> list[bytes]:
        return [self.secret] + [s.get_secret_value().encode() for s in self.old_secret_keys]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
