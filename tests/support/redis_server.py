"""A private, real redis-server for tests that restart Redis or need queues of their own."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.processes import free_port


class RedisServer:
    def __init__(self, workdir: Path, bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.argv = [binary, "--port", str(self.port), "--bind", *bind, "--save", "",
                     "--appendonly", "no", "--protected-mode", "no", "--dir", str(workdir)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()  # the child has its own copy
        client = redis.Redis(port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 30  # a loaded machine can take seconds to start it
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                client.ping()
                client.close()
                return self
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start:\n"
                           + (self.workdir / "redis.log").read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: Redis keeps nothing on disk here, so everything is lost
            self.proc.wait(10)

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
