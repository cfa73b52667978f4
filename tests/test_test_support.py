"""The test support's own promise: a process it calls ready is ready.

uvicorn logs "Application startup complete" before it binds its socket; on a loaded
machine a test that went by that line alone got "connection refused"."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.processes import WebServer, accepts_connections, free_port

LATE_BINDER = """
import socket, sys, time
print("INFO:     Application startup complete.", flush=True)
time.sleep(2)  # what a busy machine does between that line and the bind
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
while True:
    sock.accept()[0].close()
"""


def test_a_web_server_is_ready_once_it_accepts_connections(tmp_path: Path) -> None:
    script = tmp_path / "late_binder.py"
    script.write_text(LATE_BINDER)
    port = free_port()
    server = WebServer(dict(os.environ), tmp_path / "late.log", port)
    server.argv = [sys.executable, str(script), str(port)]
    try:
        server.start(timeout=60)
        assert accepts_connections(port), "start() returned before the port was open"
    finally:
        server.stop()
