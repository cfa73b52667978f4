"""RFC 3464 delivery status notifications: one block of fields per recipient.

``message/delivery-status`` (and RFC 6533's ``message/global-delivery-status``) holds a
per-message block (Reporting-MTA, Arrival-Date…) and then one block per recipient
(Final-Recipient, Action, Status, Diagnostic-Code, Remote-MTA). The same ``Name: value``
blocks carry ARF's ``message/feedback-report`` (see :mod:`.arf`).
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.bounces import patterns
from mailer.bounces.classes import BounceClass
from mailer.bounces.classify import ENHANCED, explain, smtp_stage
from mailer.bounces.parse.decoding import address, decoded_text, header_text
from mailer.bounces.parse.heuristics import best_line, diagnostic_near
from mailer.bounces.parse.report import FailedRecipient

#: Delivery-status fields in the body of a broken multipart, or pasted as text.
DSN_FIELDS_IN_TEXT = patterns.compile(
    r"^(final-recipient|original-recipient)[ \t]*:[ \t]*\S+;", re.IGNORECASE | re.MULTILINE
)
_FIELD = patterns.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]?(.*)$")

Fields = dict[str, list[str]]


def fields_text(part: Message) -> str:
    """The field blocks of a delivery-status or feedback-report part, as text.

    The email package splits ``message/delivery-status`` into one Message per block, parses
    other ``message/*`` types (global-delivery-status, feedback-report) as one embedded
    message whose headers are the first block, and leaves encoded ones as a string.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return decoded_text(part)
    blocks = []
    for sub in payload:
        if not isinstance(sub, Message):
            continue
        lines = [f"{name}: {header_text(value)}" for name, value in sub.items()]
        body = "" if sub.is_multipart() else decoded_text(sub)
        if body.strip():
            lines.append("")
            lines.append(body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


#: The fields that name a recipient: each group has each of them once (RFC 3464 §2.3).
_GROUP_OPENERS = ("original-recipient", "final-recipient", "x-actual-recipient")


def field_blocks(text: str) -> list[Fields]:
    """``Name: value`` blocks separated by blank lines; continuation lines unfolded.

    Some MTAs leave out the blank lines: between the per-message fields and the first
    recipient, or between recipients. A block is split where a recipient field comes a
    second time (the next recipient's group) and where the first recipient field follows
    per-message fields.
    """
    blocks: list[Fields] = []
    current: Fields = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        match = _FIELD.match(line)
        if match and not line[0].isspace():
            last = match.group(1).lower()
            if current and _opens_a_group(current, last):
                blocks.append(current)
                current = {}
            current.setdefault(last, []).append(match.group(2).strip())
        elif last is not None:
            current[last][-1] = f"{current[last][-1]} {line.strip()}".strip()
    if current:
        blocks.append(current)
    return blocks


def _opens_a_group(current: Fields, name: str) -> bool:
    if name not in _GROUP_OPENERS:
        return False
    if not is_recipient_block(current):
        return "reporting-mta" in current or "arrival-date" in current  # per-message fields
    # The same recipient field twice: the next recipient's group. (Either order of
    # Original- and Final-Recipient is met: Postfix writes Final-Recipient first.)
    return name in current


def merge_blocks(blocks: list[Fields]) -> Fields:
    merged: Fields = {}
    for block in blocks:
        for name, values in block.items():
            merged.setdefault(name, []).extend(values)
    return merged


def is_recipient_block(block: Fields) -> bool:
    return any(k in block for k in ("final-recipient", "original-recipient", "x-actual-recipient"))


def normal_action(value: str) -> str:
    word = (value.split() or [""])[0].lower().rstrip(";,.")
    if word.startswith(("fail", "error", "permanent", "bounce")):
        return "failed"
    if word.startswith(("delay", "defer", "transient")):
        return "delayed"
    return word


def strip_type(value: str) -> str:
    """``smtp; 550 5.1.1 …`` → ``550 5.1.1 …``; ``dns; mx.example.net`` → ``mx.example.net``."""
    value = " ".join(value.split())
    match = re.match(r"^[A-Za-z][\w.-]*\s*;\s*", value)
    return value[match.end():] if match else value


_REPLY_START = patterns.compile(r"^(\d{3})[ -](\d\.\d{1,3}\.\d{1,3}\b)?")


def unfold_reply(text: str) -> str:
    """``550-5.1.1 The email account … 550-5.1.1 double-checking … 550 5.1.1 …`` → one
    sentence: a multi-line SMTP reply repeats its code on every line."""
    match = _REPLY_START.match(text)
    if not match:
        return text
    code, status = match.group(1), match.group(2)
    repeated = rf"\s{code}[ -]" + (rf"(?:{re.escape(status)}\s+)?" if status else "")
    rest = re.sub(repeated, " ", text[match.end():])
    return " ".join(f"{code} {status or ''} {rest}".split())


# --- reading the report ---------------------------------------------------------------------


def read_dsn(dsn_texts: list[str], text: str) -> tuple[list[FailedRecipient], str]:
    """The recipients of a DSN, and the return path its per-message fields name.

    ``text`` is the human-readable part, read when the fields say too little.
    """
    blocks = field_blocks("\n\n".join(dsn_texts))
    per_message = merge_blocks([b for b in blocks if not is_recipient_block(b)])
    senders = per_message.get("x-postfix-sender") or per_message.get("original-mail-from")
    groups = [b for b in blocks if is_recipient_block(b)]
    named = [_final_recipient(b) for b in groups]
    recipients = [_recipient(b, text, named) for b in groups]
    return recipients, address((senders or [""])[0])


def _final_recipient(block: Fields) -> str:
    for name in ("final-recipient", "x-actual-recipient", "original-recipient"):
        if block.get(name):
            return address(block[name][0])
    return ""


def _recipient(block: Fields, text: str, named: list[str]) -> FailedRecipient:
    def first(name: str) -> str:
        return block.get(name, [""])[0].strip()

    recipient = _final_recipient(block)
    original = address(first("original-recipient"))
    action = normal_action(first("action"))
    status_match = ENHANCED.search(first("status"))
    status_field = status_match.group(0) if status_match else ""
    diagnostic = unfold_reply(strip_type(first("diagnostic-code")))
    remote = (strip_type(first("remote-mta")).split() or [""])[0].rstrip(".")
    # The human-readable part says more than the fields: at which SMTP stage the reply
    # came (Postfix: "(in reply to end of DATA command)"), and why, when the fields don't.
    near = diagnostic_near(text, recipient, others=named) if recipient else ""
    stage = smtp_stage(diagnostic) or smtp_stage(near)
    if not stage and len(named) == 1:  # a transcript that names no address (Sendmail)
        stage = smtp_stage(text)
    verdict = explain(None, status_field, diagnostic, stage=stage, recipient=recipient,
                      final=action == "failed")
    if action == "delayed":
        klass = BounceClass.delayed
    elif action in ("delivered", "relayed", "expanded"):
        klass = BounceClass.not_a_bounce  # nothing failed: kept as evidence, acts on nobody
    else:
        if not verdict.explained and near:
            # The fields say too little ("Status: 5.0.0", no diagnostic): the
            # human-readable part often says more next to the address.
            better = explain(None, status_field, f"{diagnostic}\n{near}", stage=stage,
                             recipient=recipient, final=action == "failed")
            if better.explained:
                verdict, diagnostic = better, diagnostic or best_line(near)
        klass = verdict.bounce_class
    if not diagnostic and near:
        diagnostic = best_line(near)
    return FailedRecipient(
        recipient=recipient, original_recipient=original, action=action,
        status=verdict.status, diagnostic=diagnostic[:2000], remote_mta=remote[:255],
        bounce_class=klass, strength=verdict.strength if klass == BounceClass.hard else "",
    )
