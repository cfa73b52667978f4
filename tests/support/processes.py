"""Real processes for the tests: Celery workers, Celery beat and the web app (uvicorn)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process in its own process group, its output in a log file."""

    ready_text = ""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]),
        )
        handle.close()
        self.wait_ready(timeout)
        return self

    def output(self) -> str:
        with self.log.open("rb") as f:
            f.seek(getattr(self, "_offset", 0))
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited early:\n{self.output()[-4000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.argv} not ready in {timeout}s:\n{self.output()[-4000:]}")

    def is_ready(self) -> bool:
        return self.ready_text in self.output()

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """kill -9 the whole process group: no cleanup, no goodbye to Redis or SMTP."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Worker(Process):
    """A Celery worker with the tests' options; by default on the queues Procfile.dev's
    worker consumes (``procfile_queues``), so a queue users run is a queue the tests run."""

    ready_text = " ready."

    def __init__(self, env: dict[str, str], log: Path, *,
                 queues: str | None = None, concurrency: int = 2,
                 name: str = "test") -> None:
        queues = queues or procfile_queues()
        node = f"{name}-{os.getpid()}-{time.time_ns()}@%h"
        super().__init__([
            str(BIN / "celery"), "-A", "workers.app", "worker", "-Q", queues,
            "-c", str(concurrency), "--pool", "prefork", "-n", node,
            "--without-mingle", "--without-gossip", "--loglevel", "INFO",
        ], env, log)


class Beat(Process):
    ready_text = "beat: Starting..."

    def __init__(self, env: dict[str, str], log: Path, schedule: Path) -> None:
        super().__init__([
            str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel", "INFO",
            "--schedule", str(schedule),
        ], env, log)


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class WebServer(Process):
    # uvicorn logs "Application startup complete" *before* it binds its socket: a request
    # sent on that line alone can be refused on a busy machine. Ready means both.
    ready_text = "Application startup complete"

    def __init__(self, env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        super().__init__([
            str(BIN / "uvicorn"), "--factory", "mailer.web.app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
        ], env, log)

    def is_ready(self) -> bool:
        return super().is_ready() and accepts_connections(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def procfile_command(name: str) -> list[str]:
    """The command line ``Procfile.dev`` gives process ``name``, run from this venv.

    A reliability test starts the worker exactly as ``make run`` does (and as
    docker-compose.yml does: a test keeps the two in step), not with test-only options."""
    root = Path(__file__).resolve().parents[2]
    for line in (root / "Procfile.dev").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            argv = command.split()
            argv[0] = str(BIN / Path(argv[0]).name)
            return argv
    raise LookupError(f"Procfile.dev has no {name!r} process")


def procfile_queues() -> str:
    """The queues (``-Q``) of Procfile.dev's worker."""
    argv = procfile_command("worker")
    return argv[argv.index("-Q") + 1]


class UserWorker(Process):
    """A Celery worker started with Procfile.dev's command line, nothing added."""

    ready_text = " ready."

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(procfile_command("worker"), env, log)
