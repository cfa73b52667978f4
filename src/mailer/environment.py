"""``MAILER_*`` variables without pydantic: the defaults, how variables are read, and the
checks that refuse a misconfigured deployment.

:mod:`mailer.config` builds its typed settings on this module (its models take their
defaults and their secret checks from here). The few commands that must start at once
(``mailer bounces classify`` without ``--attribute``) read the handful of values they use
with :func:`read_bounce_reading` instead: the same variables, defaults and error messages,
without importing pydantic (which, with the models, was two thirds of their start-up).
Only the values read are checked; the full settings check every variable.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = "MAILER_"  # every setting is the variable PREFIX + its name
Env = Literal["development", "test", "production"]
ENVS: tuple[Env, ...] = ("development", "test", "production")
DEFAULT_ENV: Env = "development"
DEFAULT_SECRET = "change-me-this-is-the-development-secret"  # noqa: S105 - refused outside development
#: Secrets sign every token a reader gets (confirm, unsubscribe, VERP): 32 characters of
#: ``secrets.token_urlsafe`` are 192 bits, beyond guessing.
MIN_SECRET_LENGTH = 32
KEYGEN_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
DEFAULT_SMTP_URL = "smtp://127.0.0.1:1025"  # the development catcher of `make run`
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_FROM_ADDRESS = "CEP Newsletter <newsletter@cep-probation.example.org>"
#: Domain of the VERP return path: bounces+TOKEN@bounce_domain.
DEFAULT_BOUNCE_DOMAIN = "bounces.cep-probation.example.org"
#: MAILER_BOUNCE_MAX_BYTES unless set (see BounceSettings.bounce_max_bytes).
DEFAULT_BOUNCE_MAX_BYTES = 1024 * 1024

#: The folder for local state (SQLite database, outbox, logs) when nothing else is configured.
VAR_DIR = Path(os.environ.get("MAILER_VAR_DIR", Path.cwd() / "var"))


def default_database_url() -> str:
    return f"sqlite:///{VAR_DIR / 'mailer.db'}"


class InvalidSettings(SystemExit):
    """The settings cannot be used. A SystemExit, so that whichever process reads them (the
    web app, a worker, the CLI) stops with one line per variable instead of a traceback."""

    @classmethod
    def of(cls, lines: list[str]) -> InvalidSettings:
        return cls("mailer cannot start, its settings are not usable:\n"
                   + "\n".join(f"  - {line}" for line in lines))


def read_variables(environ: Mapping[str, str] | None = None,
                   env_file: str | Path | None = ".env") -> dict[str, str]:
    """Every variable, its name upper-cased: ``environ`` (the process environment when
    None) over ``env_file`` (skipped when None or absent)."""
    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        found |= {k.upper(): v for k, v in dotenv_values(env_file).items() if v is not None}
    found |= {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    return found


def list_from_json(variable: str, value: str) -> list[Any]:
    """A list setting as the environment writes it (JSON); ValueError naming the variable."""
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    if not isinstance(decoded, list):
        raise ValueError(f"{variable} must be a JSON list, such as '[\"a\", \"b\"]'; "
                         f"got {value!r}")
    return decoded


# --- where things are ---------------------------------------------------------------------
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
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Is this host name or address this machine's loopback (127.0.0.0/8, ::1, localhost)?"""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_is_local(url: str) -> bool:
    """Does this database or Redis URL point at this machine (loopback, a Unix socket, a file)?"""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite") or parts.scheme == "unix":
        return True
    socket_dir = parse_qs(parts.query).get("host", [""])[-1]
    if not parts.hostname:  # libpq's default: the local Unix socket (or ?host=/run/...)
        return not socket_dir or socket_dir.startswith("/")
    return is_loopback(parts.hostname)


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
        tls = query.get("tls") or ("none" if is_loopback(host) else "starttls")
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


def check_from_address(value: str) -> str:
    if "@" not in parseaddr(value)[1]:
        raise ValueError(f"MAILER_FROM_ADDRESS must hold one address, got {value!r}")
    return value


# --- the checks of a deployment -----------------------------------------------------------
@dataclass(frozen=True)
class Whereabouts:
    """What decides whether anybody but this machine sees what is signed."""

    env: str
    base_url: str
    smtp_url: str
    redis_url: str
    database_url: str

    def not_on_this_machine(self) -> list[str]:
        """The variables that point beyond this machine's loopback, with their hosts."""
        elsewhere = []
        base = urlsplit(self.base_url).hostname or ""
        if not is_loopback(base):
            elsewhere.append(f"MAILER_BASE_URL ({base or self.base_url})")
        smtp = parse_smtp_url(self.smtp_url)
        if not smtp.is_loopback:
            elsewhere.append(f"MAILER_SMTP_URL ({smtp.host})")
        for name, url in (("MAILER_REDIS_URL", self.redis_url),
                          ("MAILER_DATABASE_URL", self.database_url)):
            if not url_is_local(url):
                elsewhere.append(f"{name} ({urlsplit(url).hostname})")
        return elsewhere

    def problems(self, secret_key: str, old_secret_keys: list[str]) -> list[str]:
        """Why these settings must not start (none: they may)."""
        problems = self._secret_problems(secret_key, old_secret_keys)
        if self.env == "production":
            problems += self._production_problems()
        return problems

    def _secret_problems(self, secret_key: str, old_secret_keys: list[str]) -> list[str]:
        elsewhere = self.not_on_this_machine()
        if self.env != "production" and not elsewhere:
            return []  # nobody but this machine ever sees a token signed with it
        why = ("MAILER_ENV is production" if self.env == "production" else
               f"{' and '.join(elsewhere)} {'are' if len(elsewhere) > 1 else 'is'} "
               "not on this machine")
        named = [("MAILER_SECRET_KEY", secret_key)] + [
            (f"MAILER_OLD_SECRET_KEYS[{i}]", key) for i, key in enumerate(old_secret_keys)]
        problems = []
        for name, value in named:
            if value == DEFAULT_SECRET:
                problems.append(f"{name} is the public development default, and {why}: "
                                f"anyone could forge its tokens. Make a long random one: "
                                f"{KEYGEN_COMMAND}")
            elif len(value) < MIN_SECRET_LENGTH:
                chars = "character" if len(value) == 1 else "characters"
                problems.append(f"{name} has only {len(value)} {chars}, and {why}: it "
                                f"needs at least {MIN_SECRET_LENGTH}. Make one: {KEYGEN_COMMAND}")
        return problems

    def _production_problems(self) -> list[str]:
        problems = []
        base = urlsplit(self.base_url)
        if base.scheme != "https" or not base.hostname or is_loopback(base.hostname):
            problems.append(
                f"MAILER_BASE_URL is {self.base_url!r}; under MAILER_ENV=production it must "
                "be the public https:// address readers reach (every link in every mail is "
                "built from it)")
        if self.smtp_url == DEFAULT_SMTP_URL:
            problems.append(
                "MAILER_SMTP_URL is the development catcher of `make run`; under "
                "MAILER_ENV=production point it at your relay (smtp://user:pass@relay:587)")
        return problems


# --- the few values classifying a bounce needs --------------------------------------------
@dataclass(frozen=True)
class BounceReading:
    """What reading a bounce takes from the settings: the keys its VERP token is checked
    with, our own addresses (never the failed recipient) and the size cap."""

    secrets: tuple[bytes, ...]
    from_email: str
    bounce_domain: str
    bounce_max_bytes: int


#: An integer as pydantic reads one from text: optional sign, digits with single
#: underscores between, and a fraction of zeros only.
_INTEGER = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0+)?")


def _integer(variable: str, value: str, problems: list[str]) -> int | None:
    text = value.strip()
    if not _INTEGER.fullmatch(text):
        problems.append(f"{variable}: Input should be a valid integer, unable to parse "
                        "string as an integer")
        return None
    return int(text.split(".")[0])


def read_bounce_reading(environ: Mapping[str, str] | None = None,
                        env_file: str | Path | None = ".env") -> BounceReading:
    """:class:`BounceReading` from the same variables, defaults and checks as
    :func:`mailer.config.get_settings`, without pydantic. Raises :class:`InvalidSettings`
    with the lines get_settings() would give for a wrong value among those read."""
    found = read_variables(environ, env_file)

    def get(name: str, default: str) -> str:
        return found.get(PREFIX + name.upper(), default)

    old_keys: list[Any] = []
    if PREFIX + "OLD_SECRET_KEYS" in found:  # checked first, as the settings model does
        try:
            old_keys = list_from_json("MAILER_OLD_SECRET_KEYS",
                                      found[PREFIX + "OLD_SECRET_KEYS"])
        except ValueError as exc:
            raise InvalidSettings.of([str(exc)]) from None
    problems: list[str] = []
    env = get("env", DEFAULT_ENV)
    if env not in ENVS:
        problems.append("MAILER_ENV: Input should be 'development', 'test' or 'production'")
    problems += [f"MAILER_OLD_SECRET_KEYS[{i}]: Input should be a valid string"
                 for i, key in enumerate(old_keys) if not isinstance(key, str)]
    from_address = get("from_address", DEFAULT_FROM_ADDRESS)
    smtp_url = get("smtp_url", DEFAULT_SMTP_URL)
    for check, value, variable in ((check_from_address, from_address, ""),
                                   (parse_smtp_url, smtp_url, "MAILER_SMTP_URL: ")):
        try:
            check(value)
        except ValueError as exc:
            problems.append(variable + str(exc))
    cap = _integer("MAILER_BOUNCE_MAX_BYTES",
                   get("bounce_max_bytes", str(DEFAULT_BOUNCE_MAX_BYTES)), problems)
    if problems:
        raise InvalidSettings.of(problems)
    secret_key = get("secret_key", DEFAULT_SECRET)
    where = Whereabouts(env=env, base_url=get("base_url", DEFAULT_BASE_URL).rstrip("/"),
                        smtp_url=smtp_url, redis_url=get("redis_url", DEFAULT_REDIS_URL),
                        database_url=get("database_url", default_database_url()))
    problems = where.problems(secret_key, old_keys)
    if problems:
        raise InvalidSettings.of(problems)
    assert cap is not None
    return BounceReading(
        secrets=tuple(key.encode() for key in [secret_key, *old_keys]),
        from_email=parseaddr(from_address)[1],
        bounce_domain=get("bounce_domain", DEFAULT_BOUNCE_DOMAIN),
        bounce_max_bytes=cap,
    )
