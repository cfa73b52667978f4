"""SMTP transport: one reused connection per process, every failure as one exception.

Every error smtplib or the socket can raise becomes :class:`SMTPFailure`, with the SMTP
code (None when the connection broke), the server's words, the stage it happened at and
whether it is temporary. The callers decide what each outcome means for a delivery.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
from dataclasses import dataclass

from mailer.config import SMTPSettings


class SMTPFailure(Exception):
    def __init__(self, code: int | None, reply: str, stage: str) -> None:
        self.code = code
        self.reply = reply
        self.stage = stage
        super().__init__(f"{stage}: {code or 'no reply'} {reply}".strip())

    @property
    def temporary(self) -> bool:
        """4xx, or no answer at all (connection refused, dropped, timed out)."""
        return self.code is None or 400 <= self.code < 500

    @property
    def may_have_been_delivered(self) -> bool:
        """The connection broke after the message was handed over, before the reply."""
        return self.stage == "data" and self.code is None


@dataclass(frozen=True)
class Accepted:
    code: int
    reply: str


class _FastSMTP(smtplib.SMTP):
    """smtplib with a DATA that trusts our CRLF bytes and dot-stuffs with bytes.replace.

    smtplib's own ``data()`` runs two regular expressions over every message (~200 µs for
    a 40 KB digest); our messages are already CRLF-terminated, so a replace does it.
    """

    def data_bytes(self, payload: bytes) -> tuple[int, bytes]:
        self.putcmd("data")
        code, repl = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, repl)
        return self.payload(payload)

    def payload(self, payload: bytes, then: bytes = b"") -> tuple[int, bytes]:
        """Send the message after a 354 and read the server's verdict. ``then``: the next
        transaction's commands, sent in the same write (RFC 2920 lets message content
        start a group); their replies are left for the next read."""
        if payload.startswith(b"."):
            payload = b"." + payload
        payload = payload.replace(b"\r\n.", b"\r\n..")
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        self.send(payload + b".\r\n" + then)
        return self.getreply()


class _FastSMTPSSL(smtplib.SMTP_SSL, _FastSMTP):
    pass


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SMTPTransport:
    def __init__(self, smtp: SMTPSettings) -> None:
        self.target = smtp.target
        self.timeout = smtp.timeout
        self._conn: _FastSMTP | None = None
        self._pid = os.getpid()
        #: (sender, recipient) of a transaction whose MAIL, RCPT and DATA went out with the
        #: previous message and whose replies are not read yet.
        self._ahead: tuple[str, str] | None = None

    # --- connection ---------------------------------------------------------------------
    def _connect(self) -> _FastSMTP:
        t = self.target
        try:
            if t.tls == "implicit":
                conn: _FastSMTP = _FastSMTPSSL(
                    t.host, t.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = _FastSMTP(t.host, t.port, timeout=self.timeout)
            conn.ehlo()
            if t.tls == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if t.username:
                conn.login(t.username, t.password or "")
        except smtplib.SMTPResponseException as exc:
            raise SMTPFailure(exc.smtp_code, _decode(exc.smtp_error), "connect") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise SMTPFailure(None, f"{type(exc).__name__}: {exc}", "connect") from exc
        return conn

    def abandon_ahead(self) -> None:
        """The transaction begun ahead will not be sent after all: hang up (a server that
        said 354 takes whatever ends with a dot, so closing is the only way to send
        nothing); the next message connects again."""
        if self._ahead is not None:
            self._drop()

    def close(self) -> None:
        if self._ahead is not None:
            self._drop()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._ahead = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    # --- sending ------------------------------------------------------------------------
    def send(self, sender: str, recipient: str, payload: bytes,
             then: tuple[str, str] | None = None) -> Accepted:
        """One SMTP transaction for one recipient. Raises SMTPFailure.

        ``then``: the (sender, recipient) of the message the caller will certainly send
        next on this connection; with PIPELINING its MAIL, RCPT and DATA go out with this
        message's content, one round trip a message instead of two. A caller that does
        not send it after all calls :meth:`abandon_ahead`."""
        if self._pid != os.getpid():  # forked: never share a socket with the parent
            self._conn, self._pid, self._ahead = None, os.getpid(), None
        if self._ahead is not None and self._ahead != (sender, recipient):
            self._drop()  # not the message begun ahead: that one must not go out
        reused = self._conn is not None
        try:
            return self._transaction(sender, recipient, payload, then)
        except _StaleConnection:
            # The server closed an idle connection before MAIL FROM: nothing was handed
            # over, so one fresh attempt is safe.
            self._drop()
            if not reused:
                raise SMTPFailure(None, "connection closed before MAIL FROM", "mail") from None
            return self._transaction(sender, recipient, payload, then)

    def _transaction(self, sender: str, recipient: str, payload: bytes,
                     then: tuple[str, str] | None = None) -> Accepted:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        stage = "mail"
        try:
            options = ["SMTPUTF8"] if not (sender + recipient).isascii() else []
            if conn.has_extn("pipelining"):
                return self._pipelined(conn, sender, recipient, payload, then)
            try:
                code, reply = conn.mail(sender, options)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                raise _StaleConnection from exc
            if code != 250:
                self._reset()
                raise SMTPFailure(code, _decode(reply), stage)
            stage = "rcpt"
            code, reply = conn.rcpt(recipient)
            if code not in (250, 251):
                self._reset()
                raise SMTPFailure(code, _decode(reply), stage)
            stage = "data"
            code, reply = conn.data_bytes(payload)
            if code != 250:
                raise SMTPFailure(code, _decode(reply), stage)
            return Accepted(code, _decode(reply))
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server is closing the connection
                self._drop()
            raise SMTPFailure(exc.smtp_code, _decode(exc.smtp_error), stage) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SMTPFailure(None, f"{type(exc).__name__}: {exc}", stage) from exc
        except SMTPFailure as exc:
            if exc.code == 421:
                self._drop()
            raise

    def _pipelined(self, conn: _FastSMTP, sender: str, recipient: str, payload: bytes,
                   then: tuple[str, str] | None) -> Accepted:
        """RFC 2920: MAIL, RCPT and DATA in one write, three replies in one read; and with
        ``then``, the next message's three commands in the write that ends this one.

        One or two round trips a message instead of four. Every reply is read, whatever
        the first ones said, so the connection stays in step for the next message."""
        stage = "mail"
        try:
            if self._ahead is not None:  # sent with the previous message's content
                self._ahead = None
            else:
                conn.send(_commands(sender, recipient))
            mail = conn.getreply()
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnection from exc
        try:
            stage = "rcpt"
            rcpt = conn.getreply()
            stage = "data"
            data = conn.getreply()
            failed = (("mail", mail) if mail[0] != 250
                      else ("rcpt", rcpt) if rcpt[0] not in (250, 251) else None)
            if failed:
                if data[0] == 354:  # a server that said yes to DATA anyway: end it empty
                    conn.send(b".\r\n")
                    conn.getreply()
                self._reset()
                raise SMTPFailure(failed[1][0], _decode(failed[1][1]), failed[0])
            if data[0] != 354:
                raise SMTPFailure(data[0], _decode(data[1]), "data")
            ahead = _commands(*then) if then is not None else b""
            if ahead:
                self._ahead = then
            code, reply = conn.payload(payload, ahead)
            if code != 250:
                raise SMTPFailure(code, _decode(reply), "data")
            return Accepted(code, _decode(reply))
        except SMTPFailure as exc:
            if exc.code == 421:
                self._drop()
            raise
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise SMTPFailure(None, f"{type(exc).__name__}: {exc}", stage) from exc

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()


class _StaleConnection(Exception):
    pass


_UNSAFE = frozenset("<>\r\n\"(),; \t")


def _commands(sender: str, recipient: str) -> bytes:
    """MAIL, RCPT and DATA of one transaction, for one pipelined write."""
    extra = "" if (sender + recipient).isascii() else " SMTPUTF8"
    return (f"MAIL FROM:{_angle(sender)}{extra}\r\n"
            f"RCPT TO:{_angle(recipient)}\r\n"
            "DATA\r\n").encode()


def _angle(address: str) -> str:
    """``<address>`` for MAIL FROM / RCPT TO. Our addresses are normalised by
    email-validator, so the plain ones need no parsing (smtplib.quoteaddr runs the RFC 2822
    address parser, ~20 µs, twice per message); anything unusual still goes through it."""
    if address and not _UNSAFE.intersection(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


_process_transport: SMTPTransport | None = None


def process_transport(smtp: SMTPSettings) -> SMTPTransport:
    """The SMTP connection this process reuses for every message it sends (one process has
    one relay: ``smtp`` is read when the connection is first made)."""
    global _process_transport
    if _process_transport is None or _process_transport._pid != os.getpid():
        _process_transport = SMTPTransport(smtp)
    return _process_transport


def close_process_transport() -> None:
    global _process_transport
    if _process_transport is not None:
        _process_transport.close()
    _process_transport = None
