"""docker-compose.yml, the Dockerfile and deploy/Caddyfile keep the production rules.

No Docker engine runs here, so the file is read as YAML and checked rule by rule, and
Docker Compose itself (Debian's docker-compose, installed by .ci/setup) validates it.

Measured before: the base URL defaulted to http://localhost:8000 under MAILER_ENV=production;
Mailpit's inbox (every confirmation link) and the web app were published on all interfaces;
the private ranges could read /metrics (behind a proxy: everyone); the image installed the
development dependencies; `make compose-check` failed with "not found" and no hint.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailer.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
REQUIRED = {"MAILER_SECRET_KEY": "s" * 48, "POSTGRES_PASSWORD": "p" * 24,
            "MAILER_SMTP_URL": "smtp://user:pw@relay.example.org:587",
            "MAILER_BASE_URL": "https://newsletter.example.org"}


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, enough for this file."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3) or ""
        if values.get(name):
            return values[name]
        if op == ":?":
            raise KeyError(f"{name}: {rest}")
        return rest if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, text.replace("$$", "\0")).replace(
        "\0", "$")


def compose(values: dict[str, str] | None = None) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), REQUIRED if values is None else values))


def services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The services `docker compose up` starts (with ``profile``: that profile's too)."""
    return {name: svc for name, svc in compose()["services"].items()
            if not svc.get("profiles") or profile in svc["profiles"]}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_every_required_variable_is_required_and_none_defaults_to_localhost() -> None:
    raw = COMPOSE.read_text()
    for name in ("MAILER_SMTP_URL", "MAILER_BASE_URL", "MAILER_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", raw), f"{name} is not required"
        assert not re.search(r"\$\{" + name + ":-", raw), f"{name} has a default"
        with pytest.raises(KeyError, match=name):
            compose({k: v for k, v in REQUIRED.items() if k != name})
    assert "localhost" not in raw and "mailpit:1025" not in re.sub(r"#.*", "", raw)


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(env_file=None)


def test_the_applications_settings_are_accepted_and_are_production(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What compose hands the app passes mailer's own rules (MAILER_ENV=production), and
    the same with an http base URL does not."""
    for name in ("web", "worker", "beat", "migrate", "flower"):
        env = env_of(services()[name])
        assert env["MAILER_ENV"] == "production", name
        assert _settings_from(env, monkeypatch).base_url == REQUIRED["MAILER_BASE_URL"]
    env = env_of(compose({**REQUIRED, "MAILER_BASE_URL": "http://newsletter.example.org"})
                 ["services"]["web"])
    with pytest.raises(ValueError, match="MAILER_BASE_URL is 'http://newsletter"):
        _settings_from(env, monkeypatch)


def _published(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host address or None for all interfaces, host port) of each published port."""
    out = []
    for port in service.get("ports", []):
        parts = str(port).split("/")[0].split(":")
        out.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else ""))
    return out


def test_only_the_proxy_is_published_beyond_loopback() -> None:
    for name, service in services("development").items():
        for address, port in _published(service):
            if name == "proxy":
                assert port in ("80", "443"), port
            else:
                assert address is not None and ipaddress.ip_address(address).is_loopback, (
                    f"{name} publishes {port} on every interface")


def test_mailpit_only_in_the_development_profile() -> None:
    assert "mailpit" not in services()
    assert services("development")["mailpit"]["profiles"] == ["development"]
    for name, service in services().items():  # nothing in production needs it
        assert "mailpit" not in json.dumps(service.get("depends_on", {})), name


def test_the_web_app_trusts_forwarded_headers_from_the_proxy_only() -> None:
    web, proxy = services()["web"], services()["proxy"]
    assert "--proxy-headers" in web["command"]
    proxy_address = proxy["networks"]["edge"]["ipv4_address"]
    assert env_of(web)["FORWARDED_ALLOW_IPS"] == proxy_address
    assert "edge" in web["networks"]
    subnet = compose()["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$MAILER_BASE_URL\} \{", caddyfile, re.M)
    assert re.search(r"^\s*reverse_proxy web:8000$", caddyfile, re.M)
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]


def test_metrics_by_token_or_from_loopback_only() -> None:
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.search(r"^\s*respond /metrics 404$", caddyfile, re.M)  # never through the proxy
    for name in ("web", "worker", "beat"):
        env = env_of(services()[name])
        networks = [ipaddress.ip_network(n) for n in json.loads(env["MAILER_METRICS_NETWORKS"])]
        token_required = re.search(r"\$\{MAILER_METRICS_TOKEN:\?", COMPOSE.read_text())
        assert token_required or all(n.is_loopback for n in networks), networks


def test_the_image_installs_mailer_without_its_development_tools() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [install] = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert "[dev]" not in install and "-e " not in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    uses_flower = "flower" in json.dumps(services()["flower"]["command"])
    assert not uses_flower or ("'.[flower]'" in install and "flower" in extras[
        "optional-dependencies"])
    assert not any(d.startswith("flower") for d in extras["dependencies"])


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (.ci/setup installs it)")
def test_docker_compose_itself_accepts_the_file_and_refuses_without_the_required() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    ok = subprocess.run(["make", "--no-print-directory", "compose-check"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0 and "docker-compose.yml is valid" in ok.stdout, ok.stderr
    without = {**env, **{k: v for k, v in REQUIRED.items() if k != "MAILER_BASE_URL"}}
    refused = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, env=without,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "set MAILER_BASE_URL" in refused.stderr


def test_compose_check_without_docker_compose_says_what_to_install() -> None:
    empty = {k: v for k, v in os.environ.items() if k != "PATH"}
    done = subprocess.run([shutil.which("make") or "make", "--no-print-directory",
                           "compose-check"], cwd=ROOT, env={**empty, "PATH": "/nonexistent"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "apt-get install docker-compose" in done.stderr
    assert "tests/test_deploy.py" in done.stderr and "not found" not in done.stderr
