"""The quick path of ``mailer bounces classify`` (mailer.cli.quick): without Typer, click or
pydantic, and the same answer as the Typer command, byte for byte.

Each case runs the real ``mailer`` executable (the quick path when the command line is one
it serves) next to the Typer app called directly (``mailer.cli.commands.app``, the path
every command line took before), in child processes with the same environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from mailer.config import InvalidSettings, Settings, describe, load_settings
from mailer.emails.verp import return_path
from mailer.environment import (
    BounceReading,
    read_bounce_reading,
)
from tests.support.factories import stack_keys
from tests.test_bounce_classify_attribution import OLD_RCPT, _bounce
from tests.test_cli_startup import HEAVY, _imported

CORPUS = Path(__file__).parent / "fixtures" / "bounces"
MAILER = Path(sys.executable).with_name("mailer")
TYPER = ("import sys; sys.argv = ['mailer', *sys.argv[1:]]\n"
         "from mailer.cli.commands import app\napp()\n")
FIXTURES = ["postfix-user-unknown.eml", "exim-classic-unrouteable.eml", "arf-yahoo.eml",
            "abwesenheitsnotiz-no-header.eml", "backscatter-forged-verp.eml",
            "courier-two-recipients.eml"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A developer's environment: no MAILER_* variable of the test run, no database."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return {**base, "MAILER_VAR_DIR": str(tmp_path / "var"), "COLUMNS": "100"}


def _both(env: dict[str, str], cwd: Path, *args: object) -> tuple[
        subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    argv = ["bounces", "classify", *map(str, args)]
    quick = subprocess.run([str(MAILER), *argv], env=env, cwd=cwd, capture_output=True,
                           timeout=60, check=False)
    typer = subprocess.run([sys.executable, "-c", TYPER, *argv], env=env, cwd=cwd,
                           capture_output=True, timeout=60, check=False)
    return quick, typer


def _same(quick: subprocess.CompletedProcess[bytes],
          typer: subprocess.CompletedProcess[bytes]) -> None:
    assert (quick.returncode, quick.stdout, quick.stderr) == (
        typer.returncode, typer.stdout, typer.stderr)


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["table", "json"])
def test_the_quick_path_says_what_the_typer_command_says(
        env: dict[str, str], tmp_path: Path, as_json: list[str]) -> None:
    files = [CORPUS / name for name in FIXTURES]
    quick, typer = _both(env, tmp_path, *as_json, *files)
    assert quick.returncode == 0, quick.stderr
    _same(quick, typer)
    if as_json:
        rows = [json.loads(line) for line in quick.stdout.splitlines()]
        assert [Path(r["message"]).name for r in rows] == FIXTURES
        assert rows[0]["recipients"][0]["class"] == "hard"
    else:
        assert b"recipient" in quick.stdout and b"anna.berg@example.net" in quick.stdout


def test_options_after_the_files_a_folder_and_an_mbox(env: dict[str, str],
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "some"
    folder.mkdir()
    for name in FIXTURES[:3]:
        (folder / name).write_bytes((CORPUS / name).read_bytes())
    box = tmp_path / "box.mbox"
    box.write_bytes(b"".join(b"From MAILER-DAEMON Tue Mar  3 09:05:07 2026\n"
                             + (CORPUS / name).read_bytes() + b"\n" for name in FIXTURES[:2]))
    quick, typer = _both(env, tmp_path, folder, "./box.mbox", "--json")
    assert quick.returncode == 0, quick.stderr
    assert len(quick.stdout.splitlines()) == 5
    _same(quick, typer)


def test_a_genuine_token_is_valid_with_the_settings_keys_old_ones_included(
        env: dict[str, str], tmp_path: Path) -> None:
    """The quick path checks VERP tokens with the keys the settings would give: this one is
    signed with the key the test run uses, here listed as an old key."""
    from mailer.config import get_settings

    bounce = tmp_path / "genuine.eml"
    bounce.write_bytes(_bounce(verp=return_path("delivery", 5, identity=get_settings().identity,
                                                keys=stack_keys())))
    env |= {"MAILER_SECRET_KEY": "n" * 40, "MAILER_OLD_SECRET_KEYS": json.dumps(
        [get_settings().secret_key.get_secret_value()])}
    for as_json in ([], ["--json"]):
        quick, typer = _both(env, tmp_path, *as_json, bounce)
        _same(quick, typer)
    [row] = [json.loads(line) for line in quick.stdout.splitlines()]
    [failure] = row["recipients"]
    assert failure["recipient"] == OLD_RCPT
    assert " valid; database not read" in failure["attribution"]["note"]
    without_old = {**env, "MAILER_OLD_SECRET_KEYS": "[]"}
    quick, typer = _both(without_old, tmp_path, "--json", bounce)
    _same(quick, typer)
    assert "forged" in json.loads(quick.stdout)["recipients"][0]["attribution"]["note"]


def test_a_bad_file_and_an_oversize_one(env: dict[str, str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\xff not a mail at all \x80\n" * 50)
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    for as_json in ([], ["--json"]):
        quick, typer = _both(env, tmp_path, *as_json, garbage, empty)
        assert quick.returncode == 0, quick.stderr
        _same(quick, typer)
    env["MAILER_BOUNCE_MAX_BYTES"] = "1000"
    big = CORPUS / "postfix-user-unknown.eml"
    assert big.stat().st_size > 1000
    for as_json in ([], ["--json"]):
        quick, typer = _both(env, tmp_path, *as_json, big, garbage)
        assert quick.returncode == 1  # a message was refused
        _same(quick, typer)
    assert b"refused" in quick.stdout and b"over the cap of 1,000 bytes" in quick.stdout


@pytest.mark.parametrize("args", [
    ["missing.eml"],  # Typer names the file that does not exist
    ["--nonsense", "x.eml"],
    ["--help"],
    [],
])
def test_what_the_quick_path_does_not_serve_typer_answers(
        env: dict[str, str], tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "x.eml").write_bytes((CORPUS / "postfix-user-unknown.eml").read_bytes())
    quick, typer = _both(env, tmp_path, *args)
    assert quick.returncode != 0 or args == ["--help"]
    _same(quick, typer)
    if args == ["missing.eml"]:
        assert b"missing.eml" in quick.stderr and b"does not exist" in quick.stderr


def test_the_quick_path_imports_neither_typer_nor_pydantic(env: dict[str, str],
                                                           tmp_path: Path) -> None:
    bounce = str(CORPUS / "postfix-user-unknown.eml")
    for args in (["bounces", "classify", bounce], ["bounces", "classify", "--json", bounce]):
        imported = _imported(tmp_path, env, *args)
        assert "mailer" in imported
        assert not imported & {"typer", "click", "pydantic", "pydantic_core", "sqlalchemy",
                               *HEAVY}, imported
    attributed = _imported(tmp_path, env, "bounces", "classify", "--attribute", bounce)
    assert {"typer", "pydantic"} <= attributed  # --attribute: the Typer path, the settings


# --- the settings the quick path reads ----------------------------------------------------

BAD = [
    {"MAILER_BOUNCE_MAX_BYTES": "a lot"},
    {"MAILER_BOUNCE_MAX_BYTES": "1e6"},
    {"MAILER_ENV": "staging"},
    {"MAILER_FROM_ADDRESS": "newsletter"},
    {"MAILER_SMTP_URL": "http://relay.example.org"},
    {"MAILER_OLD_SECRET_KEYS": "oldkey"},
    {"MAILER_OLD_SECRET_KEYS": '["' + "o" * 40 + '", 7]'},
    {"MAILER_ENV": "production"},  # the default secret, the default base URL and relay
    {"MAILER_ENV": "production", "MAILER_SECRET_KEY": "k" * 40,
     "MAILER_BASE_URL": "https://news.example.org", "MAILER_SMTP_URL": "smtp://relay.example.org",
     "MAILER_OLD_SECRET_KEYS": '["short"]'},
    {"MAILER_DATABASE_URL": "postgresql+psycopg://mailer@db.internal/mailer"},
    {"MAILER_ENV": "staging", "MAILER_BOUNCE_MAX_BYTES": "x", "MAILER_FROM_ADDRESS": "x"},
]


def _settings_error(environ: dict[str, str]) -> str:
    try:
        load_settings(environ, env_file=None)
    except ValidationError as exc:
        return str(InvalidSettings.of(describe(exc)))
    raise AssertionError("the settings took it")


@pytest.mark.parametrize("environ", BAD, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_a_bad_value_gives_the_error_the_settings_give(environ: dict[str, str]) -> None:
    with pytest.raises(InvalidSettings) as refused:
        read_bounce_reading(environ, env_file=None)
    assert str(refused.value) == _settings_error(environ)


def test_a_bad_setting_stops_the_quick_path_as_it_stops_the_typer_one(
        env: dict[str, str], tmp_path: Path) -> None:
    env["MAILER_ENV"] = "production"
    bounce = CORPUS / "postfix-user-unknown.eml"
    quick, typer = _both(env, tmp_path, "--json", bounce)
    _same(quick, typer)
    attributed = subprocess.run([str(MAILER), "bounces", "classify", "--attribute", bounce],
                                env=env, cwd=tmp_path, capture_output=True, timeout=60,
                                check=False)
    assert quick.returncode == attributed.returncode == 1
    assert quick.stdout == b""
    assert quick.stderr == attributed.stderr  # get_settings()'s own words
    assert quick.stderr.startswith(b"mailer cannot start, its settings are not usable:\n"
                                   b"  - MAILER_SECRET_KEY is the public development default")


GOOD = [
    {},
    {"MAILER_FROM_ADDRESS": '"CEP, News" <News@Example.org>', "MAILER_BOUNCE_DOMAIN": "b.example",
     "MAILER_BOUNCE_MAX_BYTES": " 2_048.00 "},
    {"MAILER_ENV": "production", "MAILER_SECRET_KEY": "k" * 40,
     "MAILER_OLD_SECRET_KEYS": json.dumps(["o" * 32, "p" * 50]),
     "MAILER_BASE_URL": "https://news.example.org/", "MAILER_SMTP_URL": "smtps://relay.example.org"},
    {"mailer_bounce_max_bytes": "+77"},  # any case, as the settings read them
]


@pytest.mark.parametrize("environ", GOOD)
def test_the_values_are_the_settings_values(environ: dict[str, str]) -> None:
    settings = load_settings(environ, env_file=None)
    assert read_bounce_reading(environ, env_file=None) == BounceReading(
        secrets=tuple(settings.all_secrets), from_email=settings.identity.from_email,
        bounce_domain=settings.identity.bounce_domain,
        bounce_max_bytes=settings.bounces.bounce_max_bytes)


def test_dot_env_is_read_as_the_settings_read_it(tmp_path: Path) -> None:
    dot_env = tmp_path / ".env"
    dot_env.write_text("MAILER_BOUNCE_DOMAIN=from-dot-env.example\nMAILER_BOUNCE_MAX_BYTES=5\n")
    environ = {"MAILER_BOUNCE_MAX_BYTES": "9"}  # the environment over .env
    reading = read_bounce_reading(environ, env_file=dot_env)
    settings = load_settings(environ, env_file=dot_env)
    assert (reading.bounce_domain, reading.bounce_max_bytes) == (
        settings.identity.bounce_domain, settings.bounces.bounce_max_bytes) == (
        "from-dot-env.example", 9)


def test_the_variables_read_are_the_settings_variables() -> None:
    groups = Settings.groups()
    assert {Settings.variable("secret_key"), Settings.variable("old_secret_keys"),
            Settings.variable("env"), Settings.variable("base_url"),
            Settings.variable("redis_url"), Settings.variable("database_url"),
            groups["identity"].variable("from_address"),
            groups["identity"].variable("bounce_domain"),
            groups["smtp"].variable("url"),
            groups["bounces"].variable("bounce_max_bytes")} == {
        "MAILER_SECRET_KEY", "MAILER_OLD_SECRET_KEYS", "MAILER_ENV", "MAILER_BASE_URL",
        "MAILER_REDIS_URL", "MAILER_DATABASE_URL", "MAILER_FROM_ADDRESS",
        "MAILER_BOUNCE_DOMAIN", "MAILER_SMTP_URL", "MAILER_BOUNCE_MAX_BYTES"}


@pytest.mark.parametrize("text", ["12", " 12 ", "1_000", "+5", "-5", "12.0", "12.00", "1_0.0",
                                  "\t12\n", "0012", "12.5", "1e3", "0x10", "", "12.", ".0",
                                  "1__0", "_1", "1_000_", "- 5", "1 2", "١٢"])
def test_an_integer_is_read_as_pydantic_reads_it(text: str) -> None:
    try:
        expected: int | None = TypeAdapter(int).validate_python(text)
    except ValidationError:
        expected = None
    environ = {"MAILER_BOUNCE_MAX_BYTES": text}
    try:
        got: int | None = read_bounce_reading(environ, env_file=None).bounce_max_bytes
    except InvalidSettings:
        got = None
    assert got == expected
