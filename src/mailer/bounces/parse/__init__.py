"""Reading a bounce mail: who failed, how, and why, in the words the server used.

Three layers, the most trustworthy first:

1. Standard reports. RFC 3464 delivery status notifications (``message/delivery-status``,
   and RFC 6533's ``message/global-delivery-status``) carry one block of fields per
   recipient (:mod:`.dsn`); RFC 5965 ARF complaints carry a ``message/feedback-report``
   (:mod:`.arf`).
2. The bounces real servers still send without those parts (:mod:`.heuristics`): the
   failed address stands out in a few ways, the reason is the text next to it.
3. Auto-replies (:mod:`.autoreply`) and everything else.

:mod:`.mime` sorts a message's parts, :mod:`.original` reads the quoted original (our
Message-ID, our return path), :mod:`.decoding` turns bytes into text, :mod:`.reader` puts
the layers in order.

Nothing here raises on a malformed message: what cannot be understood comes back as
``kind="unparsed"`` with the reason in ``error``, so the caller keeps and counts it. Only
input over the size cap is refused, with :class:`BounceTooLarge`.
"""

from __future__ import annotations

import logging
import mailbox
from collections.abc import Iterator, Sequence
from pathlib import Path

from mailer.bounces.parse.decoding import normal_line_ends
from mailer.bounces.parse.reader import Reader
from mailer.bounces.parse.report import (
    EXCERPT_BYTES,
    BounceReport,
    BounceTooLarge,
    FailedRecipient,
    OurAddresses,
    unparsed_recipient,
)
from mailer.environment import DEFAULT_BOUNCE_MAX_BYTES

__all__ = ["BounceReport", "BounceTooLarge", "FailedRecipient", "OurAddresses", "iter_messages",
           "parse_bounce"]

log = logging.getLogger(__name__)
# flufl.bounce logs every detector that chokes on odd MIME before re-raising; we catch
# those errors and fall back to our own rules, so its tracebacks are noise in the logs.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def parse_bounce(
    raw: bytes, *, ours: OurAddresses, envelope_to: Sequence[str] = (),
    max_bytes: int = DEFAULT_BOUNCE_MAX_BYTES,
) -> BounceReport:
    """Understand one bounce mail. Never raises, except :class:`BounceTooLarge` (over
    ``max_bytes``: the intake paths pass ``MAILER_BOUNCE_MAX_BYTES``). ``ours``: our own
    addresses, never taken for a failed recipient (the parser reads no settings)."""
    cap = max_bytes
    if len(raw) > cap:
        raise BounceTooLarge(
            f"refused: the message is {len(raw):,} bytes, over the cap of {cap:,} bytes "
            "(MAILER_BOUNCE_MAX_BYTES)"
        )
    excerpt = raw[:EXCERPT_BYTES].decode("utf-8", "replace")
    try:
        return Reader(normal_line_ends(raw), list(envelope_to), excerpt, ours=ours).report()
    except Exception as exc:  # a parser bug must neither lose the bounce nor stop the worker
        log.exception("bounce parser failed")
        return BounceReport(
            kind="unparsed", recipients=[unparsed_recipient("")],
            addressed_to=[a for a in envelope_to if a], original_message_id="",
            original_return_path="", subject="", message_id="", feedback_type="",
            error=f"parser error: {type(exc).__name__}: {exc}"[:500], excerpt=excerpt,
        )


def iter_messages(path: Path, *, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """The messages in an .eml file, an mbox file or a Maildir (or a folder of files).

    Yields (label, raw bytes). A single file is read up to ``limit`` + 1 bytes (default:
    the bounce size cap), enough for :func:`parse_bounce` to refuse it without reading a
    huge file into memory.
    """
    limit = DEFAULT_BOUNCE_MAX_BYTES if limit is None else limit
    path = Path(path)
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new")):
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(maildir.keys()):
                yield f"{path}/{key}", maildir.get_bytes(key)
            return
        for child in sorted(path.iterdir()):
            if child.is_file() and not child.name.startswith("."):
                yield from iter_messages(child, limit=limit)
        return
    with path.open("rb") as fh:
        head = fh.read(limit + 1)
    if head.startswith(b"From "):
        box = mailbox.mbox(path, factory=None, create=False)
        for number, key in enumerate(box.keys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
        return
    yield str(path), head
