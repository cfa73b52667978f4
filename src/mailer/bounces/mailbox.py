"""Fetching bounce mails from a mailbox over IMAP or POP3 (beat task ``poll-bounce-mailbox``).

For people whose bounce domain's MX is a mail host they do not run ``mailer bounces serve``
on: the VERP address is delivered to a mailbox, and this polls it. Settings:

- ``MAILER_IMAP_URL`` ``imap://user:password@host`` (STARTTLS, or plaintext to loopback),
  ``imaps://user:password@host`` (implicit TLS), ``?tls=none`` for plaintext elsewhere;
  ``MAILER_IMAP_FOLDER`` (INBOX) and ``MAILER_IMAP_PROCESSED_FOLDER``: a processed message
  is moved there, or deleted when it is not set;
- ``MAILER_POP3_URL`` ``pop3://…`` / ``pop3s://…`` the same way; processed messages are
  deleted (POP3 has no folders).

Each message goes through the one intake (:func:`mailer.bounces.intake.receive`) in its own
transaction, and is moved or deleted only after that transaction committed. A crash in
between leaves it in the mailbox; the next poll takes it in again and, the message being
known by its fingerprint, records nothing twice. A message over ``bounce_max_bytes`` is
not downloaded: its first kilobytes are kept as a refused, unparsed bounce.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import poplib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from mailer.bounces.actions import EXCERPT_LIMIT
from mailer.bounces.intake import IntakeResult, receive, refuse_too_large
from mailer.bounces.parse import OurAddresses
from mailer.config import BounceSettings, is_loopback
from mailer.db import transaction
from mailer.redis import get_redis

log = logging.getLogger(__name__)

#: At most this many messages per poll, so one poll cannot run for ever.
POLL_LIMIT = 500

# poplib refuses lines over 2 KiB by default, and bounce mails carry long lines (base64
# without breaks, one-line HTML): the size cap bounds what we read instead.
poplib._MAXLINE = max(poplib._MAXLINE, 1024 * 1024)  # type: ignore[attr-defined]

_PORTS = {("imap", "implicit"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
          ("pop3", "implicit"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}


@dataclass(frozen=True)
class MailboxTarget:
    protocol: Literal["imap", "pop3"]
    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    username: str
    password: str


def parse_mailbox_url(url: str) -> MailboxTarget:
    """``imap[s]://user:password@host[:port][?tls=…]`` or ``pop3[s]://…`` → MailboxTarget.

    As for SMTP: the ``s`` schemes mean implicit TLS, the others STARTTLS, except that a
    loopback host gets plaintext unless ``?tls=`` says otherwise.
    """
    parts = urlsplit(url)
    implicit = parts.scheme in ("imaps", "pop3s")
    protocol = parts.scheme[:-1] if implicit else parts.scheme
    if protocol not in ("imap", "pop3"):
        raise ValueError(f"mailbox URL must start with imap://, imaps://, pop3:// or pop3s://, "
                         f"got {parts.scheme}://")
    host = parts.hostname or ""
    if not host:
        raise ValueError("mailbox URL has no host")
    if not parts.username or parts.password is None:
        raise ValueError("mailbox URL needs user:password@ before the host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if implicit:
        tls = "implicit"
    else:
        tls = query.get("tls") or ("none" if is_loopback(host) else "starttls")
    if tls not in ("none", "starttls", "implicit"):
        raise ValueError(f"mailbox URL tls= must be none, starttls or implicit, got {tls!r}")
    return MailboxTarget(protocol=protocol, host=host,  # type: ignore[arg-type]
                         port=parts.port or _PORTS[(protocol, tls)], tls=tls,  # type: ignore[arg-type]
                         username=unquote(parts.username), password=unquote(parts.password))



@dataclass
class PollResult:
    fetched: int = 0
    recorded: int = 0
    repeats: int = 0
    refused: int = 0

    def add(self, result: IntakeResult) -> None:
        self.fetched += 1
        self.recorded += len(result.recorded)
        self.repeats += result.repeats
        self.refused += bool(result.refused)

    def as_dict(self) -> dict[str, int]:
        return {"fetched": self.fetched, "recorded": self.recorded, "repeats": self.repeats,
                "refused": self.refused}


def _take_in(raw: bytes, source: str, bounces: BounceSettings, ours: OurAddresses,
             keys: Sequence[bytes]) -> IntakeResult:
    with transaction() as session:
        return receive(session, raw=raw, source=source, bounces=bounces, ours=ours, keys=keys)


def _take_in_too_large(head: bytes, size: int, source: str,
                       bounces: BounceSettings) -> IntakeResult:
    with transaction() as session:
        return refuse_too_large(session, head=head, size=size, source=source, bounces=bounces)


# --- IMAP --------------------------------------------------------------------------------------


def poll_imap(url: str, *, bounces: BounceSettings, ours: OurAddresses, keys: Sequence[bytes],
              timeout: float, folder: str = "INBOX",
              processed_folder: str | None = None, limit: int = POLL_LIMIT) -> PollResult:
    """Take in every message of ``folder``; move each to ``processed_folder`` (or delete it)
    once its bounce is committed. One over ``bounces.bounce_max_bytes`` is refused from its
    headers."""
    target = parse_mailbox_url(url)
    cap = bounces.bounce_max_bytes
    result = PollResult()
    conn = _imap_connect(target, timeout)
    try:
        _ok(conn.login(target.username, target.password), "login")
        # What the server offers after login (MOVE, UIDPLUS) is often more than it said before.
        capabilities = set(_ok(conn.capability(), "capability")[0].upper().split())
        if processed_folder:
            processed_folder = _server_name(conn, processed_folder)
            conn.create(_quote(processed_folder))  # NO when it exists already: fine
        _ok(conn.select(_quote(_server_name(conn, folder))), f"select {folder}")
        can_move = b"MOVE" in capabilities
        # Messages flagged \Deleted were processed already (a crash before EXPUNGE).
        uids = [u.decode() for u in _ok(conn.uid("SEARCH", "UNDELETED"), "search")[0].split()]
        for uid in uids[:limit]:
            size = _imap_size(conn, uid)
            if size is None:
                continue  # expunged by someone else meanwhile
            if size > cap:
                head = _imap_fetch(conn, uid, f"BODY.PEEK[]<0.{EXCERPT_LIMIT}>")
                result.add(_take_in_too_large(head, size, "imap", bounces))
            else:
                result.add(_take_in(_imap_fetch(conn, uid, "BODY.PEEK[]"), "imap", bounces,
                                    ours, keys))
            _imap_dispose(conn, uid, processed_folder, can_move)
        if b"UIDPLUS" in capabilities and uids:
            conn.uid("EXPUNGE", ",".join(uids[:limit]))
        else:
            conn.expunge()
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            conn.logout()
    return result


def _imap_connect(target: MailboxTarget, timeout: float) -> imaplib.IMAP4:
    if target.tls == "implicit":
        return imaplib.IMAP4_SSL(target.host, target.port, ssl_context=ssl.create_default_context(),
                                 timeout=timeout)
    conn = imaplib.IMAP4(target.host, target.port, timeout=timeout)
    if target.tls == "starttls":
        conn.starttls(ssl_context=ssl.create_default_context())
    return conn


def _server_name(conn: imaplib.IMAP4, name: str) -> str:
    """A folder name written with "/" between levels, in the server's own separator
    ("Bounces/Processed" is "Bounces.Processed" on a Maildir++ server)."""
    if "/" not in name:
        return name
    typ, data = conn.list('""', '""')
    line = data[0] if typ == "OK" and data and isinstance(data[0], bytes) else b""
    match = re.search(rb'\) "(.)" ', line)
    return name.replace("/", match.group(1).decode()) if match else name


def _ok(answer: tuple[str, list], what: str) -> list:  # type: ignore[type-arg]
    typ, data = answer
    if typ != "OK":
        raise imaplib.IMAP4.error(f"IMAP {what} failed: {data!r}")
    return data


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


def _imap_size(conn: imaplib.IMAP4, uid: str) -> int | None:
    for item in _ok(conn.uid("FETCH", uid, "(RFC822.SIZE)"), "fetch size"):
        line = item[0] if isinstance(item, tuple) else item
        match = _SIZE.search(line or b"")
        if match:
            return int(match.group(1))
    return None


def _imap_fetch(conn: imaplib.IMAP4, uid: str, what: str) -> bytes:
    for item in _ok(conn.uid("FETCH", uid, f"({what})"), "fetch"):
        if isinstance(item, tuple):
            return bytes(item[1])
    return b""


def _imap_dispose(conn: imaplib.IMAP4, uid: str, processed_folder: str | None,
                  can_move: bool) -> None:
    if processed_folder and can_move:
        _ok(conn.uid("MOVE", uid, _quote(processed_folder)), "move")
        return
    if processed_folder:
        _ok(conn.uid("COPY", uid, _quote(processed_folder)), "copy")
    _ok(conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), "store")


# --- POP3 --------------------------------------------------------------------------------------


def poll_pop3(url: str, *, bounces: BounceSettings, ours: OurAddresses, keys: Sequence[bytes],
              timeout: float, limit: int = POLL_LIMIT) -> PollResult:
    """Take in every message of the POP3 mailbox and delete it once its bounce is committed
    (POP3 deletes at QUIT: a broken connection deletes nothing, the next poll repeats)."""
    target = parse_mailbox_url(url)
    cap = bounces.bounce_max_bytes
    result = PollResult()
    conn = _pop3_connect(target, timeout)
    try:
        conn.user(target.username)
        conn.pass_(target.password)
        _, listing, _ = conn.list()
        for line in listing[:limit]:
            number, size = (int(x) for x in line.split()[:2])
            if size > cap:
                _, lines, _ = conn.top(number, 100)
                head = b"\r\n".join(lines)[:EXCERPT_LIMIT]
                result.add(_take_in_too_large(head, size, "pop3", bounces))
            else:
                _, lines, _ = conn.retr(number)
                result.add(_take_in(b"\r\n".join(lines) + b"\r\n", "pop3", bounces, ours, keys))
            conn.dele(number)
        conn.quit()
    except BaseException:
        conn.close()  # no QUIT: the server forgets the deletions of this session
        raise
    return result


def _pop3_connect(target: MailboxTarget, timeout: float) -> poplib.POP3:
    if target.tls == "implicit":
        return poplib.POP3_SSL(target.host, target.port, timeout=timeout,
                               context=ssl.create_default_context())
    conn = poplib.POP3(target.host, target.port, timeout=timeout)
    if target.tls == "starttls":
        conn.stls(context=ssl.create_default_context())
    return conn


# --- the beat task's entry point ------------------------------------------------------------


def poll_configured(bounces: BounceSettings, *, ours: OurAddresses, keys: Sequence[bytes],
                    timeout: float) -> dict[str, int]:
    """Poll the IMAP and/or POP3 mailbox ``bounces`` names, one poller at a time; each
    network call waits at most ``timeout`` seconds. ``keys`` (``Settings.all_secrets``)
    check the bounces' VERP tokens and Message-IDs."""
    lock = get_redis().lock("mailer:lock:bounce-mailbox",
                            timeout=max(600, bounces.bounce_poll_minutes * 120),
                            blocking=False)
    if not lock.acquire():
        return {"skipped": 1}  # the previous poll is still at it
    try:
        totals: dict[str, int] = {}
        if bounces.imap_url:
            found = poll_imap(bounces.imap_url, bounces=bounces, ours=ours, keys=keys,
                              timeout=timeout,
                              folder=bounces.imap_folder,
                              processed_folder=bounces.imap_processed_folder)
            totals.update({f"imap_{k}": v for k, v in found.as_dict().items()})
        if bounces.pop3_url:
            found = poll_pop3(bounces.pop3_url, bounces=bounces, ours=ours, keys=keys,
                              timeout=timeout)
            totals.update({f"pop3_{k}": v for k, v in found.as_dict().items()})
        return totals
    finally:
        with contextlib.suppress(redis.RedisError):  # expired meanwhile: no matter
            lock.release()
