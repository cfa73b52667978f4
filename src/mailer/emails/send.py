"""Sending one message of a kind that is not a newsletter delivery: :func:`send_one`.

Its registry entry (:mod:`mailer.emails.kinds`) says which template folder it is rendered
from and how its Message-ID and envelope sender are spelled. :func:`send_one` renders it,
builds it (:func:`~mailer.emails.message.build_message`: the headers every message
carries), DKIM-signs it, sends it over the process's SMTP connection and counts the
transaction under its kind (``mailer_smtp_replies_by_kind``, as the bulk sender counts the
newsletters). The callers keep what they record of it: a confirmation token marked sent,
an editor's audit row, a line of a test-copy report.

The bulk sender does not come through here: it assembles an edition's messages from their
frozen snapshot in microseconds (:mod:`mailer.delivery.assembly`), with the kind and the
spellings taken from the same registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailer.config import IdentitySettings, SMTPSettings
from mailer.counters import timed
from mailer.emails.dkim import configured_signer
from mailer.emails.kinds import MessageKind, type_of
from mailer.emails.message import Attachment, build_message, message_id, to_bytes
from mailer.emails.render import RenderedEmail, render_email
from mailer.emails.transport import SMTPFailure, process_transport
from mailer.emails.verp import return_path


@dataclass(frozen=True)
class SendResult:
    """What became of one message: accepted (``failure`` None) or refused."""

    kind: MessageKind
    to: str
    message_id: str
    code: int | None
    reply: str
    failure: SMTPFailure | None = None

    @property
    def sent(self) -> bool:
        return self.failure is None

    @property
    def temporary(self) -> bool:
        """Refused for now (4xx, or no answer): worth trying again later."""
        return self.failure is not None and self.failure.temporary


def render(kind: MessageKind | str, context: Mapping[str, Any]) -> RenderedEmail:
    """``kind``'s templates (its registry entry's folder) rendered with ``context``."""
    return render_email(type_of(kind).template, **context)


def envelope_sender(kind: MessageKind | str, verp_id: int | None,
                    identity: IdentitySettings, keys: Sequence[bytes]) -> str:
    """The return path: the kind's VERP token for the row ``verp_id`` when the kind has a
    letter, else the newsletter's own address (staff mail no bounce is tied back to)."""
    if type_of(kind).verp is not None and verp_id is not None:
        return return_path(kind, verp_id, identity=identity, keys=keys)
    return identity.from_email


def send_one(kind: MessageKind | str, to: str, context: Mapping[str, Any], *,
             ids: Sequence[object], identity: IdentitySettings, keys: Sequence[bytes],
             smtp: SMTPSettings, verp_id: int | None = None, rendered: RenderedEmail | None = None,
             transport: Any = None, attachments: Sequence[Attachment] = ()) -> SendResult:
    """Render ``kind``'s templates with ``context`` (or send ``rendered``, when the caller
    rendered it once for many), build, sign, send to ``to`` and count it.

    ``ids`` are the Message-ID's parts (``message_id(kind, *ids)``: the same message retried
    keeps its id); ``verp_id`` the row the VERP token names. Never raises for an SMTP
    refusal: the result says it (``failure``).

    ``identity`` makes the headers and the envelope sender (signed with ``keys``,
    ``Settings.all_secrets``), ``smtp`` signs and carries it:
    its callers are the one-off mails of a task or a staff action (confirmation, welcome,
    review), each handed its settings by the task or route that runs it."""
    entry = type_of(kind)
    if rendered is None:
        rendered = render(entry.kind, context)
    msg_id = message_id(entry.kind, *ids, identity=identity, keys=keys)
    # To carries the address alone: nothing a stranger typed into a form reaches a header.
    message = build_message(identity=identity, to_email=to, subject=rendered.subject,
                            text=rendered.text, html=rendered.html, msg_id=msg_id,
                            attachments=attachments)
    payload = to_bytes(message, configured_signer(smtp))
    sender = envelope_sender(entry.kind, verp_id, identity, keys)
    try:
        accepted = timed(transport or process_transport(smtp), entry.kind.value).send(
            sender, to, payload)
    except SMTPFailure as failure:
        return SendResult(entry.kind, to, msg_id, failure.code, failure.reply, failure)
    return SendResult(entry.kind, to, msg_id, accepted.code, accepted.reply)
