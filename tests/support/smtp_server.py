"""A real SMTP server on loopback (aiosmtpd) whose answers a test can program.

Rules say, per recipient address (or for everyone), what to answer at RCPT or after DATA:
a reply line such as ``451 4.3.0 Try again later``, ``hangup`` (drop the connection) or
``stall`` (stop answering, so the client times out). Every accepted message is kept with
its envelope and its bytes exactly as they came over the wire.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str
    at: float = field(default_factory=time.monotonic)  # when the server took it


@dataclass
class Rule:
    stage: str  # rcpt or data
    reply: str  # an SMTP reply line, "hangup" or "stall"
    times: int | None = None  # None: always; n: the first n times only


@dataclass
class Behaviour:
    rules: dict[str, list[Rule]] = field(default_factory=dict)  # address or "*" → rules
    #: Every answer a rule gave, in order: (address, stage, reply).
    given: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, address: str, stage: str, reply: str, times: int | None = None) -> None:
        with self.lock:
            self.rules.setdefault(address.lower(), []).append(Rule(stage, reply, times))

    def take(self, address: str, stage: str) -> str | None:
        with self.lock:
            for key in (address.lower(), "*"):
                for rule in self.rules.get(key, []):
                    if rule.stage != stage:
                        continue
                    if rule.times is not None:
                        if rule.times <= 0:
                            continue
                        rule.times -= 1
                    self.given.append((address.lower(), stage, rule.reply))
                    return rule.reply
        return None


class RecordingHandler:
    def __init__(self, server: RecordingSMTPServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:  # aiosmtpd reads pipelined commands; it just never says so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def _answer(self, smtp: SMTP, reply: str) -> str | None:
        if reply == "hangup":
            smtp.transport.close()  # type: ignore[union-attr]
            return "421 4.4.2 closing"  # never reaches the client
        if reply == "stall":
            self.server.stalls += 1
            await asyncio.sleep(3600)
        return reply

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.server.behaviour.take(address, "rcpt")
        if reply is not None:
            answer = await self._answer(smtp, reply)
            if answer is not None and not answer.startswith("2"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            reply = self.server.behaviour.take(rcpt, "data")
            if reply is not None:
                answer = await self._answer(smtp, reply)
                if answer is not None and not answer.startswith("2"):
                    return answer
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        data = (envelope.original_content or b"") if self.server.keep_bodies else b""
        received = Received(envelope.mail_from or "", list(envelope.rcpt_tos), data, peer)
        self.server.record(received)
        return f"250 2.0.0 OK queued as {len(self.server.messages)}"


class RecordingSMTPServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = Behaviour()
        self.pipelining = True
        self.stalls = 0  # how many transactions a "stall" rule has held so far
        self.keep_bodies = True  # False: envelopes only (a test of 20,000 messages)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Received], None]] = []
        self.controller = Controller(
            RecordingHandler(self), hostname=host, port=port or _free_port(),
            server_kwargs={"data_size_limit": 50 * 1024 * 1024, "enable_SMTPUTF8": True},
            ready_timeout=10,
        )
        self.host, self.port = host, self.controller.port

    def start(self) -> RecordingSMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        with self._lock:
            self.messages = []
        self.behaviour = Behaviour()
        self.pipelining = True
        self.stalls = 0
        self.keep_bodies = True

    def record(self, received: Received) -> None:
        with self._lock:
            self.messages.append(received)

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
