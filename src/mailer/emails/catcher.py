"""A local SMTP catcher for development: every message lands as an .eml file in an outbox.

``mailer outbox serve`` runs it on 127.0.0.1:1025 (``make run`` starts it). Each file is
the message as received, with the envelope in ``X-Envelope-From``/``X-Envelope-To`` lines
prepended, named by arrival time so ``ls`` shows them in order.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_counter = itertools.count()


class OutboxHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        outbox.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{os.getpid()}-{next(_counter):06d}.eml"
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        data = envelope.original_content or b""
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_bytes(head + data)
        tmp.rename(self.outbox / name)  # readers never see half a file
        return "250 2.0.0 stored in outbox"


def serve(outbox: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    controller = Controller(
        OutboxHandler(outbox), hostname=host, port=port,
        server_kwargs={"data_size_limit": 50 * 1024 * 1024, "enable_SMTPUTF8": True},
    )
    controller.start()
    return controller


