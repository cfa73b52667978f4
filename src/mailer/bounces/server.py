"""The inbound SMTP server for the bounce domain's MX: ``mailer bounces serve``.

It accepts mail only for addresses at ``bounce_domain`` (VERP return paths, and the
address a feedback loop sends its ARF reports to), refuses anything over
``bounce_max_bytes`` with 552, and answers 250 only once the message is committed to the
spool (:mod:`mailer.bounces.spool`); a Celery task on the default queue then parses it and
acts. If the database cannot take the message the answer is 451, so the sending MTA keeps
it and tries again: no message the server accepted is ever lost, and none is half-taken.

It faces the whole internet, so it stays up under abuse (:class:`Limits`):

- at most ``bounce_max_connections`` connections at once, ``bounce_max_connections_per_ip``
  from one address: beyond, the greeting is ``421`` and the connection is closed;
- at most ``bounce_messages_per_ip_per_minute`` messages from one address (a token bucket):
  beyond, MAIL FROM gets ``451 4.7.1`` and a real MTA tries again later;
- a message announced bigger than the cap (``SIZE=``) gets ``552`` at MAIL FROM, before
  any of it is sent; one that turns out bigger is not kept while it is read (552 at the
  end, or the connection is closed once it runs past twice the cap);
- the bytes of all messages being received or stored at once are bounded by
  ``bounce_max_inflight_bytes``: a message that would go over gets ``452 4.3.1`` (try
  again later) and is read without being kept, so memory stays bounded however many
  large messages arrive together (aiosmtpd itself would buffer each whole DATA, line by
  line, in memory);
- a client has ``bounce_timeout_seconds`` per command, and for the whole DATA phase.

The limits live in the one server process (the bounce domain's MX needs only one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailer import tasks
from mailer.config import BounceSettings
from mailer.db import transaction

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 100


def store(raw: bytes, envelope_from: str, envelope_to: Sequence[str]) -> int:
    """Commit one accepted message to the spool and queue its processing; its spool id."""
    from mailer.bounces.spool import spool_message

    with transaction() as session:
        message = spool_message(session, raw=raw, source="mx", envelope_from=envelope_from,
                                envelope_to=envelope_to)
        inbound_id = message.id
        tasks.publish(tasks.PROCESS_INBOUND, inbound_id, session=session)
    return inbound_id


class Limits:
    """What the server admits at once; touched only on the server's event loop thread."""

    def __init__(self, bounces: BounceSettings) -> None:
        self.max_connections = bounces.bounce_max_connections
        self.max_per_ip = bounces.bounce_max_connections_per_ip
        self.rate = bounces.bounce_messages_per_ip_per_minute / 60.0
        self.burst = float(max(1, bounces.bounce_messages_per_ip_per_minute))
        self.max_inflight = bounces.bounce_max_inflight_bytes
        self.connections = 0
        self.per_ip: Counter[str] = Counter()
        self.inflight = 0
        self._buckets: dict[str, tuple[float, float]] = {}
        #: Refusals so far, by kind (logged; a test reads them through the log).
        self.refused: Counter[str] = Counter()

    def admit(self, ip: str) -> str:
        """'' when a new connection from ``ip`` may go on, else why not."""
        if self.connections >= self.max_connections:
            self.refused["connections"] += 1
            return "too many connections, try again later"
        if self.per_ip[ip] >= self.max_per_ip:
            self.refused["connections_per_ip"] += 1
            return f"too many connections from {ip}, try again later"
        self.connections += 1
        self.per_ip[ip] += 1
        return ""

    def release(self, ip: str) -> None:
        self.connections -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    def take_message(self, ip: str) -> bool:
        """One message from ``ip``, if its bucket has a token left."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[ip] = (tokens, now)
            self.refused["rate"] += 1
            return False
        self._buckets[ip] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget addresses whose bucket has refilled
            self._buckets = {k: v for k, v in self._buckets.items()
                             if v[0] + (now - v[1]) * self.rate < self.burst}
        return True

    def reserve(self, n: int) -> bool:
        if self.inflight + n > self.max_inflight:
            return False
        self.inflight += n
        return True

    def free(self, n: int) -> None:
        self.inflight -= n


_END = b"\r\n.\r\n"


class BounceSMTP(SMTP):
    """aiosmtpd's SMTP session with the server's limits: connections counted per address,
    and a DATA reader that keeps at most the cap per message and the budget in all."""

    def __init__(self, handler: object, *, limits: Limits, **kwargs: object) -> None:
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self.limits = limits
        self._ip = ""
        self._admitted = False
        self._reserved = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted:  # STARTTLS calls this again (not offered here, but be safe)
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        refusal = self.limits.admit(ip)
        if refusal:
            log.warning("bounce server refused a connection: %s", refusal, extra={"ip": ip})
            transport.write(f"421 4.7.0 {refusal}\r\n".encode())  # type: ignore[attr-defined]
            transport.close()
            return
        self._ip, self._admitted = ip, True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.limits.release(self._ip)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if not self._admitted:
            return False
        return super().eof_received()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw, refusal = await self._read_data()
        if raw is None:
            self._set_post_data_state()
            if refusal:
                await self.push(refusal)
            return
        try:  # the message's bytes stay counted in flight until it is stored
            self.envelope.original_content = raw
            self.envelope.content = raw
            status = await self._call_handler_hook("DATA")
        finally:
            self.limits.free(self._reserved)
            self._reserved = 0
        self._set_post_data_state()
        await self.push(status)  # type: ignore[arg-type]

    async def _read_data(self) -> tuple[bytes | None, str]:
        """The message up to the lone dot, dot-unstuffed; (None, reply) when it was not
        kept: over the cap, over the in-flight budget, or the connection went away."""
        cap = self.data_size_limit or 0
        buf = bytearray(b"\r\n")  # so that an empty message's ".\r\n" ends it too
        reserved = 0
        refusal = ""
        seen = 0
        tail = b""
        try:
            while self.transport is not None:
                chunk = await self._reader.read(64 * 1024)
                if not chunk:
                    return None, ""
                seen += len(chunk)
                if not refusal:
                    if cap and len(buf) - 2 + len(chunk) > cap + len(_END):
                        refusal = "552 5.3.4 message too big for this server"
                    elif not self.limits.reserve(len(chunk)):
                        refusal = ("452 4.3.1 too much mail being received at once, "
                                   "try again later")
                    if refusal:
                        tail = bytes(buf[-4:])
                        self.limits.free(reserved)
                        reserved = 0
                        buf = bytearray()
                if refusal:
                    window = tail + chunk
                    if _END in window:
                        return None, refusal
                    tail = window[-4:]
                    if cap and seen > 2 * cap:
                        # Past twice the cap nobody is sending a bounce: stop reading.
                        await self.push("552 5.3.4 message too big for this server")
                        self.transport.close()
                        return None, ""
                    continue
                reserved += len(chunk)
                start = max(0, len(buf) - 4)
                buf += chunk
                end = buf.find(_END, start)
                if end >= 0:
                    if end + len(_END) != len(buf):
                        # Pipelined commands after the dot: give them back to the reader.
                        self._reader._buffer[:0] = buf[end + len(_END):]  # type: ignore[attr-defined]
                    del buf[end + 2:]
                    del buf[:2]
                    raw = bytes(buf)
                    del buf
                    # RFC 5321 4.5.2: a line that starts with a dot loses its first dot.
                    if raw.startswith(b"."):
                        raw = raw[1:]
                    if b"\r\n." in raw:
                        raw = raw.replace(b"\r\n.", b"\r\n")
                    self._reserved, reserved = reserved, 0  # smtp_DATA frees it once stored
                    return raw, ""
            return None, ""
        finally:
            self.limits.free(reserved)


class BounceHandler:
    def __init__(self, domain: str) -> None:
        self.domain = domain.lower().rstrip(".")
        # Two at a time: each INSERT holds a copy of its message, and the messages waiting
        # for their turn stay counted in flight (a database is no faster with more).
        self.storing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bounce-store")

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        limits: Limits = server.limits  # type: ignore[attr-defined]
        if not limits.take_message(session.peer[0] if session.peer else "?"):
            return "451 4.7.1 too many messages from your address, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].lower().rstrip(".").rstrip(">")
        if domain != self.domain:
            return f"550 5.7.1 <{address}>: this server takes only mail for {self.domain}"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            inbound_id = await loop.run_in_executor(
                self.storing, store, raw, envelope.mail_from or "", list(envelope.rcpt_tos))
        except Exception:
            log.exception("could not spool an inbound bounce; answered 451")
            return "451 4.3.0 cannot store the message now, please try again later"
        log.info("bounce mail accepted", extra={"inbound_id": inbound_id, "bytes": len(raw)})
        return f"250 2.0.0 accepted as {inbound_id}"


class _Controller(Controller):
    def __init__(self, handler: BounceHandler, limits: Limits, **kwargs: object) -> None:
        self.limits = limits
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]

    def factory(self) -> SMTP:
        return BounceSMTP(self.handler, limits=self.limits, **self.SMTP_kwargs)


def start(host: str, port: int, bounces: BounceSettings, bounce_domain: str) -> Controller:
    """Start the server for mail to ``bounce_domain``, with the limits of ``bounces``, in a
    thread of its own; stop it with ``controller.stop()``."""
    controller = _Controller(
        BounceHandler(bounce_domain), Limits(bounces), hostname=host, port=port,
        server_hostname=bounce_domain, ready_timeout=10,
        data_size_limit=bounces.bounce_max_bytes, enable_SMTPUTF8=True,
        timeout=bounces.bounce_timeout_seconds,
    )
    controller.start()
    return controller
