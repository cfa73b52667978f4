"""Classifying one failure (an SMTP reply, or one recipient of a DSN) into a BounceClass,
with the strength of the evidence when it is hard.

A 5xx is not a hard bounce by itself: hard means the mailbox or the domain does not exist
(5.1.1, 5.1.2, 5.1.6, 5.1.10 and their wordings). Policy and authentication rejections
(5.7.x, 4.7.x: blocked, spam, DMARC, reputation, the recipient's own preferences) are the
sender's problem and never suppress a reader. Mailbox full (4.2.2 / 5.2.2), a broken
delivery program, a name server that does not answer, and other temporary trouble are soft.

The rules look at four things: the RFC 3463 enhanced status code, the wording of the reply,
the SMTP stage it was given at (RCPT, or after DATA), and the basic SMTP code. Servers
disagree about codes far more than about words, so a wording that names the cause can
override a vague code ("550 5.7.1 No such user" at RCPT), never the other way round. After
DATA, "user unknown" without a 5.1.x code comes from a content or sender filter: policy.
When in doubt the answer is the one that suppresses nobody at once.

**Evidence strength.** A hard verdict is *strong* when it rests on what the receiving
server said about this very address at RCPT: a 5.1.x code (given before DATA), the
address echoed back with "user unknown" or "does not exist", a domain that does not exist
or takes no mail. Anything else — a wording alone, no code, a reply after DATA, a DNS
failure that might pass — is *weak*: :mod:`mailer.bounces.actions` suppresses on it only
when a second bounce of the address confirms it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from mailer.bounces import patterns
from mailer.bounces import wordings as w
from mailer.bounces.classes import BounceClass

ENHANCED = patterns.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
BASIC = patterns.compile(r"(?<![\w.#-])([45][0-5]\d)(?=[ -]|$)", re.MULTILINE)

STRONG, WEAK = "strong", "weak"

# Enhanced status codes (RFC 3463 and the codes big providers use) whose meaning is clear.
_HARD_STATUSES = {
    "5.1.1",  # bad destination mailbox address
    "5.1.2",  # bad destination system address (the domain does not exist)
    "5.1.3",  # bad destination mailbox address syntax
    "5.1.6",  # destination mailbox has moved, no forwarding address
    "5.1.10",  # Microsoft: RecipientNotFound; RFC 7505: the domain has a null MX
    "5.4.4",  # unable to route: no MX and no address for the domain
    "5.4.310",  # Exchange Online: the DNS domain does not exist
}
_SOFT_STATUSES = {"4.2.2", "5.2.2", "5.2.3", "5.3.4", "4.4.1", "4.4.2", "4.4.7", "5.4.7",
                  "5.3.1", "5.4.6", "5.4.14", "5.4.312", "5.4.300", "5.4.316"}
#: About our side of the transaction: the sender's address or system.
_SENDER_STATUSES = {"5.1.7", "5.1.8", "4.1.7", "4.1.8"}


class _Make(Protocol):
    """The ``verdict`` helper :func:`explain` hands to its rule functions."""

    def __call__(self, bounce_class: BounceClass, rule: str, strength: str = "", /) -> Verdict:
        ...


@dataclass(frozen=True)
class Verdict:
    """A class with the rule that gave it: ops read the rule when a bounce puzzles them.

    ``strength`` is "strong" or "weak" for a hard verdict, "" for any other.
    """

    bounce_class: BounceClass
    status: str
    rule: str
    strength: str = ""

    @property
    def explained(self) -> bool:
        """False when no code and no wording said anything: the class is only a default."""
        return not self.rule.startswith("default")


def enhanced_status(text: str) -> str:
    """The most specific RFC 3463 enhanced status code in ``text`` ('' when there is none).

    "550 5.0.0 ... 550 5.1.1 ..." → "5.1.1": a detail of 0 says less than any other. In a
    transcript the successes ("250 2.1.5 Ok") come before the failure: a 2.x.x counts only
    when nothing failed.
    """
    best = success = ""
    for match in ENHANCED.finditer(text or ""):
        status = ".".join(match.groups())
        if status[0] == "2":
            success = success or status
            continue
        if not best or (_vague(best) and not _vague(status)):
            best = status
        if not _vague(best):
            break
    return best or success


def basic_code(text: str) -> int | None:
    """The first three-digit SMTP reply code (4xx or 5xx) in ``text``."""
    match = BASIC.search(text or "")
    return int(match.group(1)) if match else None


def _vague(status: str) -> bool:
    return status.endswith(".0.0") or status.endswith(".0")


def best_status(field: str, text: str, *, final: bool = False) -> str:
    """A DSN's Status field refined by the code in its diagnostic.

    Many servers put a vague "5.0.0" in the Status field and the real code in the
    Diagnostic-Code ("550-5.1.1 The email account that you tried to reach does not exist").
    The field's class (permanent or temporary) is kept: it is what the reporting MTA decided
    — unless the recipient ``final``-ly failed (``Action: failed``) and the field says 4.x.x
    while the remote's own reply was permanent: the attempt is over, the reply is the fact.
    """
    field = (field or "").strip()
    found = enhanced_status(text)
    if not ENHANCED.fullmatch(field):
        return found
    if final and field[0] == "4" and found[:1] == "5":
        return found
    if found and _vague(field) and not _vague(found) and found[0] == field[0]:
        return found
    return field


def smtp_stage(text: str) -> str:
    """The SMTP stage the reply in ``text`` was given at: "rcpt", "data", "mail" or ""."""
    text = text or ""
    flat = " ".join(text.split())  # Postfix folds "(in reply to\n    end of DATA command)"
    marks = [(m.start(), stage) for stage, pattern in (
        ("data", w.STAGE_AFTER_DATA), ("rcpt", w.STAGE_RCPT), ("mail", w.STAGE_MAIL))
        for m in [pattern.search(flat)] if m]
    if marks:
        return min(marks)[1]
    reply = w.TRANSCRIPT_REPLY.search(text)
    if reply:  # the last command the client sent before the first refusal
        commands = [m.group(1).upper() for m in w.TRANSCRIPT_COMMAND.finditer(text, 0,
                                                                              reply.start())]
        if commands:
            return {"RCPT": "rcpt", "DATA": "data", "MAIL": "mail"}.get(commands[-1], "")
    return ""


def explain(code: int | None, status: str, text: str, *, stage: str | None = None,
            recipient: str = "", final: bool = False) -> Verdict:
    """Classify a failure and say which rule decided it.

    ``stage`` is the SMTP stage when the caller knows it (else it is read from ``text``),
    ``recipient`` the failed address (echoed in the reply, it is strong evidence),
    ``final`` true when the reporting MTA gave up on the recipient (``Action: failed``).
    """
    text = text or ""
    status = best_status(status, text, final=final)
    if code is None:
        code = basic_code(text)
    klass = status[:1] or (str(code)[:1] if code else "")
    if final and klass == "4" and (status[:1] != "5") and code and code >= 500 \
            and not enhanced_status(text).startswith("4"):
        klass, status = "5", ""  # "Status: 4.0.0" over the remote's plain "550 …"
    stage = smtp_stage(text) if stage is None else stage

    def verdict(bounce_class: BounceClass, rule: str, strength: str = "") -> Verdict:
        return Verdict(bounce_class, status, rule, strength)

    if klass == "2":
        return verdict(BounceClass.delayed, "2.x.x: nothing failed")
    if status in _SENDER_STATUSES or w.SENDER_SIDE.search(text):
        return verdict(BounceClass.policy, "about the sender, not the reader")
    if status not in _HARD_STATUSES and w.EMPTY_SLOT.search(text):
        return verdict(BounceClass.soft, "the reply names no address: no evidence about "
                                         "this reader")
    policy = w.POLICY.search(text)
    if klass == "4":
        return _temporary(status, code, text, policy, final, verdict)
    full = w.MAILBOX_FULL.search(text)
    if status in ("4.2.2", "5.2.2") or full:
        return verdict(BounceClass.soft, "mailbox full" + (f": {full.group(0)!r}" if full else ""))
    local = w.LOCAL_DELIVERY.search(text)
    if local:
        return verdict(BounceClass.soft, f"the recipient's delivery program failed: "
                                         f"{local.group(0)!r}")
    # "Recipient address rejected:" (Postfix's access maps) only introduces the reason: it
    # is no wording of its own but the last resort (ADDRESS_REFUSED); the reason decides.
    evidence = _Evidence(text, recipient, stage, klass)
    suspended = w.SUSPENDED.search(text)
    if status in _HARD_STATUSES:
        if suspended:
            return verdict(BounceClass.soft, f"{status}, but the account is {suspended.group(0)!r}")
        if policy and not evidence.any_hard:
            return verdict(BounceClass.policy,
                           f"{status}, but worded as policy: {policy.group(0)!r}")
        strong = stage != "data" and not (evidence.doubtful and not evidence.domain)
        return verdict(BounceClass.hard, f"{status}: mailbox or domain does not exist"
                       + ("" if stage != "data" else ", said after DATA"),
                       STRONG if strong else WEAK)
    if status == "5.4.1" and w.RECIPIENT_REJECTED.search(text):
        # Exchange Online's directory-based edge blocking: the address is not in the tenant.
        return verdict(BounceClass.hard, "5.4.1 recipient address rejected: not in the "
                                         "directory", WEAK)
    if status.startswith("5.7."):
        return _security_code(status, text, policy, evidence, verdict)
    if status in _SOFT_STATUSES:
        return verdict(BounceClass.soft, f"{status}: temporary, size or routing problem")
    if policy:
        return verdict(BounceClass.policy, f"worded as policy: {policy.group(0)!r}")
    if suspended:
        return verdict(BounceClass.soft, f"account {suspended.group(0)!r}: it may come back")
    name_server = w.NAME_SERVER.search(text)
    if name_server and not evidence.domain:
        return verdict(BounceClass.soft, f"a name-server error: {name_server.group(0)!r}")
    hard = _hard_by_wording(evidence, verdict)
    if hard is not None:
        return hard
    weak = w.POLICY_WEAK.search(text)
    if weak:
        return verdict(BounceClass.policy, f"worded as a refusal: {weak.group(0)!r}")
    soft = w.TEMPORARY.search(text)
    if soft:
        return verdict(BounceClass.soft, f"worded as temporary: {soft.group(0)!r}")
    refused = w.ADDRESS_REFUSED.search(text)
    if refused and klass != "4":
        return verdict(BounceClass.hard, f"the address was refused: {refused.group(0)!r}", WEAK)
    if klass == "5":
        return verdict(BounceClass.soft,
                       f"default: {status or code} permanent but unexplained, counted")
    return verdict(BounceClass.soft, "default: no code and no known wording, counted")


class _Evidence:
    """What a reply says about the mailbox and the domain, found once."""

    def __init__(self, text: str, recipient: str, stage: str, klass: str) -> None:
        self.unknown = w.MAILBOX_UNKNOWN.search(text)
        self.gone = w.ACCOUNT_GONE.search(text)
        self.domain = w.DOMAIN_GONE.search(text)
        self.doubtful = w.DOMAIN_DOUBTFUL.search(text)
        self.any_hard = bool(self.unknown or self.gone or self.domain or self.doubtful)
        self.echoed = bool(recipient) and _echoed(text, recipient)
        self.stage, self.klass = stage, klass


def _hard_by_wording(e: _Evidence, verdict: _Make) -> Verdict | None:
    """Hard by what the reply says, with its strength; None when it says nothing of it."""
    at_rcpt = e.stage != "data"
    if e.domain:
        return verdict(BounceClass.hard, f"the domain does not exist: {e.domain.group(0)!r}",
                       STRONG if at_rcpt else WEAK)
    if e.doubtful:
        return verdict(BounceClass.hard, f"the domain cannot be reached: {e.doubtful.group(0)!r}",
                       WEAK)
    if e.gone:
        strong = at_rcpt and e.echoed and e.klass != "4"
        return verdict(BounceClass.hard, f"worded as gone: {e.gone.group(0)!r}",
                       STRONG if strong else WEAK)
    if e.unknown:
        if e.stage == "data":
            return verdict(BounceClass.policy, f"{e.unknown.group(0)!r} after DATA, without a "
                                               "5.1.x code: a content or sender filter")
        strong = e.echoed and e.klass != "4"
        return verdict(BounceClass.hard, f"worded as unknown: {e.unknown.group(0)!r}",
                       STRONG if strong else WEAK)
    return None


def _temporary(status: str, code: int | None, text: str, policy: re.Match[str] | None,
               final: bool, verdict: _Make) -> Verdict:
    """A 4xx: soft (or policy when it says so), also when the sender gave up on it."""
    gave_up = ", then given up on" if final else ""
    if w.GREYLIST.search(text):
        return verdict(BounceClass.soft, f"greylisted: try again later{gave_up}")
    if status.startswith("4.7."):
        return verdict(BounceClass.policy, f"{status}: temporary policy rejection{gave_up}")
    if policy:
        return verdict(BounceClass.policy, f"temporary, worded as policy: {policy.group(0)!r}")
    return verdict(BounceClass.soft, f"{status or code}: temporary failure{gave_up}")


def _security_code(status: str, text: str, policy: re.Match[str] | None, e: _Evidence,
                   verdict: _Make) -> Verdict:
    """5.7.x: a refusal at RCPT that calls the recipient invalid is hard (weakly); after
    DATA, or worded as a block ("Recipient address rejected: Access denied"), policy."""
    if e.stage == "data":
        return verdict(BounceClass.policy, f"{status} after DATA: a content or sender filter")
    unknown = e.unknown or e.gone
    if unknown and not policy and not w.POLICY_WEAK.search(text):
        return verdict(BounceClass.hard, f"{status} at RCPT, but worded as unknown: "
                                         f"{unknown.group(0)!r}", WEAK)
    return verdict(BounceClass.policy, f"{status}: security or policy rejection")


def _echoed(text: str, recipient: str) -> bool:
    """Whether the reply names ``recipient`` next to words that say it does not exist
    ("550 <a@b>... User unknown", "This user doesn't have an account (a@b)") — on the same
    line, and not on a line that holds nothing but the address."""
    address = recipient.lower()
    ours = re.compile(r"rcpt to:?\s*<?" + re.escape(address) + ">?")  # our command, not a reply
    for line in _unfolded(text.lower()):
        line = ours.sub(" ", line)
        at = line.find(address)
        if at < 0:
            continue
        rest = (line[:at] + " " + line[at + len(address):]).strip(" <>:\"'()[].,;")
        if rest and (w.MAILBOX_UNKNOWN.search(rest) or w.ACCOUNT_GONE.search(rest)
                     or w.ADDRESS_REFUSED.search(line)):
            return True
    return False


def _unfolded(text: str) -> list[str]:
    """Lines, with indented continuation lines joined to the line they continue."""
    lines: list[str] = []
    for line in text.splitlines():
        if (lines and line[:1] in (" ", "\t") and line.strip() and lines[-1].strip()
                and not _ADDRESS_ONLY.match(lines[-1])):
            lines[-1] = f"{lines[-1]} {line.strip()}"
        else:
            lines.append(line)
    return lines


#: A line that holds an address and nothing else (Exim, qmail list the failed addresses so).
#: Exchange 2003 adds the date: "addr on 3/3/2026 9:01 AM".
_ADDRESS_ONLY = patterns.compile(r"^\s*[<\"']?[^\s<>\"']+@[^\s<>\"']+[>\"']?:?\s*(on \S.*)?$")


def fallback(text: str) -> Verdict | None:
    """A hedged sentence that still says something when nothing else does (cPanel's
    "The account or domain may not exist"): hard, weak. None otherwise."""
    match = w.HEDGED_ACCOUNT_GONE.search(text or "")
    if match is None:
        return None
    return Verdict(BounceClass.hard, "", f"only the hedged wording {match.group(0)!r}", WEAK)


#: What a verdict does to the reader it is tied to (see mailer.bounces.actions).
SUPPRESS_NOW, AFTER_A_REPEAT, COUNTED, NOTHING = (
    "suppress now", "after a repeat", "counted", "nothing")


def effect_of(bounce_class: str, strength: str = "") -> str:
    """"suppress now" (a hard bounce on strong evidence, a complaint), "after a repeat" (a
    hard bounce on weak evidence), "counted" (a soft bounce: the soft-bounce rule, or the
    repeat a weak hard one waits for), "nothing" (policy — it alerts the operators —,
    delays, auto-replies, non-bounces)."""
    if bounce_class == BounceClass.complaint:
        return SUPPRESS_NOW
    if bounce_class == BounceClass.hard:
        return AFTER_A_REPEAT if strength == WEAK else SUPPRESS_NOW
    if bounce_class == BounceClass.soft:
        return COUNTED
    return NOTHING


def classify(code: int | None, status: str, text: str) -> BounceClass:
    """Classify a failure from its basic SMTP code, enhanced status and wording."""
    return explain(code, status, text).bounce_class


def classify_reply(code: int | None, reply: str) -> tuple[BounceClass, str]:
    """An SMTP server's reply during our own send → (class, enhanced status)."""
    verdict = explain(code, enhanced_status(reply), reply)
    return verdict.bounce_class, verdict.status


def hard_strength(status: str, diagnostic: str, *, recipient: str = "") -> str:
    """The strength of the evidence of a hard bounce known only by its status and
    diagnostic (a provider's event, our own SMTP transaction): "strong" or "weak"."""
    verdict = explain(None, status, diagnostic, recipient=recipient, final=True)
    return verdict.strength or WEAK


