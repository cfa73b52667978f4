"""A misconfigured deployment refuses to start, naming each variable that is wrong.

Measured before: with MAILER_ENV unset the public default secret was accepted whatever the
addresses; old keys were never checked (a 1-character key was accepted); production took an
http:// or localhost base URL, so every reader got links to localhost.

"Everything on this machine" (the base URL, SMTP, Redis and the database on loopback, a
socket or a file) is a developer's machine or a test run: there the default secret is fine,
since nobody else ever sees a token signed with it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailer.config import (
    DEFAULT_SECRET,
    InvalidSettings,
    SendingSettings,
    Settings,
    describe,
    get_settings,
    load_settings,
    reset_settings,
)
from tests.support.processes import BIN, free_port

GOOD_SECRET = "k" * 40
DEPLOYED = {"MAILER_BASE_URL": "https://newsletter.example.org",
            "MAILER_SMTP_URL": "smtp://user:pw@relay.example.org:587"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings from exactly the given MAILER_* variables (none of the test stack's)."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)

    def settings(**values: str) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return load_settings(env_file=None)

    return settings


def problems(exc: pytest.ExceptionInfo[Exception]) -> list[str]:
    """One line per problem (the rules raise them together, a line each)."""
    return [line for e in exc.value.errors()  # type: ignore[attr-defined]
            for line in e["msg"].removeprefix("Value error, ").splitlines()]


def test_a_developers_machine_may_use_the_default_secret(env) -> None:  # type: ignore[no-untyped-def]
    settings = env()  # every default: SQLite, Redis and the catcher on loopback
    assert settings.loopback_only and settings.secret_key.get_secret_value() == DEFAULT_SECRET
    assert env(MAILER_SECRET_KEY="short", MAILER_BASE_URL="http://localhost:8000",
               MAILER_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/mailer",
               MAILER_REDIS_URL="redis://[::1]:6379/0").loopback_only


@pytest.mark.parametrize("elsewhere", [
    {"MAILER_BASE_URL": "https://newsletter.example.org"},
    {"MAILER_SMTP_URL": "smtp://relay.example.org:587"},
    {"MAILER_REDIS_URL": "redis://redis:6379/0"},
    {"MAILER_DATABASE_URL": "postgresql+psycopg://mailer@db.internal/mailer"},
])
def test_with_mailer_env_unset_a_deployment_refuses_the_default_secret(
        env, elsewhere: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as refused:
        env(**elsewhere)
    [problem] = problems(refused)
    [name] = elsewhere
    assert problem.startswith("MAILER_SECRET_KEY is the public development default, and "
                              f"{name} (")
    assert "is not on this machine" in problem and "token_urlsafe" in problem


def test_short_secrets_are_refused_old_keys_included(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as refused:
        env(**DEPLOYED, MAILER_SECRET_KEY="s" * 31,
            MAILER_OLD_SECRET_KEYS=f'["{GOOD_SECRET}", "x", "{DEFAULT_SECRET}"]')
    assert [p.split(",")[0] for p in problems(refused)] == [
        "MAILER_SECRET_KEY has only 31 characters",
        "MAILER_OLD_SECRET_KEYS[1] has only 1 character",
        "MAILER_OLD_SECRET_KEYS[2] is the public development default",
    ]
    settings = env(**DEPLOYED, MAILER_SECRET_KEY="s" * 32,
                   MAILER_OLD_SECRET_KEYS=f'["{GOOD_SECRET}"]')
    assert len(settings.all_secrets) == 2


@pytest.mark.parametrize("base_url", [
    "http://newsletter.example.org", "https://localhost", "https://127.0.0.1:8443",
    "http://localhost:8000", "https://[::1]"])
def test_production_wants_the_public_https_address(env, base_url: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as refused:
        env(**{**DEPLOYED, "MAILER_BASE_URL": base_url},
            MAILER_ENV="production", MAILER_SECRET_KEY=GOOD_SECRET)
    [problem] = problems(refused)
    assert problem.startswith(f"MAILER_BASE_URL is {base_url!r}; under MAILER_ENV=production")


def test_production_refuses_the_development_catcher_and_any_weak_secret(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as refused:
        env(MAILER_ENV="production", MAILER_BASE_URL="https://newsletter.example.org")
    assert [p.split(" ")[0] for p in problems(refused)] == ["MAILER_SECRET_KEY",
                                                            "MAILER_SMTP_URL"]
    assert "and MAILER_ENV is production" in problems(refused)[0]
    accepted = env(**DEPLOYED, MAILER_ENV="production", MAILER_SECRET_KEY=GOOD_SECRET)
    assert accepted.base_url == "https://newsletter.example.org"


def test_get_settings_stops_the_process_with_one_line_per_problem(
        env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    env()  # clears the stack's variables
    monkeypatch.setenv("MAILER_BATCH_SIZE", "many")
    reset_settings()
    try:
        with pytest.raises(InvalidSettings) as stopped:
            get_settings()
    finally:
        reset_settings()
    assert isinstance(stopped.value, SystemExit)  # uncaught, it ends the process cleanly
    assert str(stopped.value).splitlines() == [
        "mailer cannot start, its settings are not usable:",
        "  - MAILER_BATCH_SIZE: Input should be a valid integer, unable to parse string as an "
        "integer"]


@pytest.mark.parametrize("argv", [
    [str(BIN / "uvicorn"), "--factory", "mailer.web.app:create_app", "--port", "{port}"],
    [str(BIN / "celery"), "-A", "workers.app", "worker", "-c", "1"],
    [str(BIN / "mailer"), "check"],
], ids=["web", "worker", "cli"])
def test_each_process_refuses_to_start_misconfigured(tmp_path: Path, argv: list[str]) -> None:
    """What an operator sees: the web app, a worker and the CLI stop at once, naming each
    variable; no traceback, and nothing starts listening."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_ENV": "production", "MAILER_SECRET_KEY": "too-short",
                "MAILER_OLD_SECRET_KEYS": '["y"]', "MAILER_BASE_URL": "http://localhost:8000",
                "MAILER_VAR_DIR": str(tmp_path)})
    port = str(free_port())
    done = subprocess.run([a.replace("{port}", port) for a in argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert lines[0] == "mailer cannot start, its settings are not usable:"
    assert [line.split(" ")[3] for line in lines[1:]] == [
        "MAILER_SECRET_KEY", "MAILER_OLD_SECRET_KEYS[0]", "MAILER_BASE_URL", "MAILER_SMTP_URL"]


def test_variables_are_read_from_the_environment_over_dot_env(tmp_path: Path) -> None:
    """What `load_settings` reads: MAILER_<name> in any case, the environment before the
    .env file, lists as JSON; variables that name no setting are ignored."""
    dot_env = tmp_path / ".env"
    dot_env.write_text("MAILER_BATCH_SIZE=7\nmailer_list_name='From the file'\n"
                       "MAILER_FEED_URLS=[\"https://a.example/feed\"]\nMAILER_NO_SUCH=1\n")
    settings = load_settings({"MAILER_BATCH_SIZE": "9", "OTHER": "x"}, env_file=dot_env)
    assert (settings.sending.batch_size, settings.identity.list_name) == (9, "From the file")
    assert settings.articles.feed_urls == ["https://a.example/feed"]
    assert load_settings({}, env_file=tmp_path / "absent.env").sending.batch_size == 500


def test_each_variable_keeps_its_name_and_lands_in_its_group() -> None:
    """Grouping changed no variable: a deployment's .env still sets the same things."""
    settings = load_settings({"MAILER_SMTP_URL": "smtp://127.0.0.1:2525",
                              "MAILER_SMTP_TIMEOUT": "4", "MAILER_BOUNCE_POLL_MINUTES": "2",
                              "MAILER_SESSION_HOURS": "3", "MAILER_HTML_BUDGET_BYTES": "9000",
                              "MAILER_QUEUE_STALL_SECONDS": "7", "MAILER_WELCOME_MAIL": "true"},
                             env_file=None)
    assert (settings.smtp.target.port, settings.smtp.timeout) == (2525, 4.0)
    assert settings.bounces.bounce_poll_minutes == 2 and settings.staff.session_hours == 3
    assert settings.editions.html_budget_bytes == 9000 and settings.ops.queue_stall_seconds == 7
    assert settings.signup.welcome_mail
    variables = [group.variable(name) for group in Settings.groups().values()
                 for name in group.model_fields]
    variables += [Settings.variable(name) for name in Settings.model_fields
                  if name not in Settings.groups()]
    # as before the groups, + CLICK_TRACKING, + the seven of WebhookSettings,
    # + WORKER_NICENESS
    assert len(variables) == len(set(variables)) == 99
    assert {"MAILER_SMTP_URL", "MAILER_BATCH_SIZE", "MAILER_POP3_URL",
            "MAILER_CLICK_TRACKING", "MAILER_WORKER_NICENESS"} <= set(variables)


def test_a_group_is_built_on_its_own_and_frozen() -> None:
    sending = SendingSettings(batch_size=3)
    assert (sending.batch_size, sending.max_attempts) == (3, 5)
    with pytest.raises(ValidationError):
        sending.batch_size = 4  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SendingSettings(batch_sise=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(("variable", "value"), [
    ("MAILER_SMTP_URL", "http://relay"), ("MAILER_SMTP_TIMEOUT", "soon"),
    ("MAILER_BOUNCE_MAX_BYTES", "big"), ("MAILER_FROM_ADDRESS", "nobody"),
    ("MAILER_SES_TOPIC_ARNS", "arn"), ("MAILER_METRICS_NETWORKS", '[1]')])
def test_a_grouped_setting_that_is_wrong_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings({variable: value}, env_file=None)
    [line] = describe(refused.value)
    assert line.startswith(variable), line


@pytest.mark.parametrize("value", ["https://a.example/feed", '{"a": 1}', "[unclosed"])
def test_a_list_that_is_not_json_names_its_variable(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings({"MAILER_FEED_URLS": value}, env_file=None)
    [line] = describe(refused.value)
    assert line.startswith("MAILER_FEED_URLS must be a JSON list"), line
    assert repr(value) in line
