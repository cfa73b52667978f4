"""A real HTTP receiver of webhooks on loopback, in a thread of the test process.

It records every request (headers and body) and answers what the test scripts: a list of
statuses taken one per request (then 200), an optional delay per request, and a gate that
holds requests until the test opens it (a worker killed in the middle of a post).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int] = []  # answered in turn; 200 once they run out
        self.delays: list[float] = []  # seconds before answering, in turn; none after
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()  # set at the first request
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # The headers and the body are two writes: without this, Nagle holds the
                # second until the client's delayed ACK (40 ms a request).
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Received(
                        time.monotonic(), self.path,
                        {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    delay = receiver.delays.pop(0) if receiver.delays else 0.0
                receiver.arrived.set()
                receiver.gate.wait(120)
                time.sleep(delay)
                answer = b"ok" if status < 300 else b"not today"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up (a timeout) or was killed

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every request's payload, each checked with standardwebhooks' own verify (it
        raises on a bad signature, a missing header or a stale timestamp)."""
        with self._lock:
            requests = list(self.requests)
        return [Webhook(secret).verify(r.body, r.headers) for r in requests]

    def message_ids(self) -> list[str]:
        with self._lock:
            return [r.message_id for r in self.requests]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)
