"""Bounces without a standard report: Exim, qmail, old Sendmail, Exchange, Domino, GroupWise,
Yahoo, hosting providers…

Their texts differ, but the failed address always stands out in the same few ways: on a
line of its own after "The following address(es) failed", as ``<addr>:`` before the
reason, in ``RCPT TO:<addr>``, in "your message to addr couldn't be delivered". The reason
is the text next to it. flufl.bounce's detectors are the second opinion on the address.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from email.message import Message
from email.utils import getaddresses

from mailer.bounces import patterns
from mailer.bounces.classes import BounceClass
from mailer.bounces.classify import BASIC, ENHANCED, Verdict, explain, fallback, smtp_stage
from mailer.bounces.parse.decoding import ADDRESS, address, header_text
from mailer.bounces.parse.original import CUT, Original
from mailer.bounces.parse.report import FailedRecipient, OurAddresses

#: What flufl.bounce's detectors get to read of a large message.
FLUFL_LIMIT = 256 * 1024

_SENDER_LINE = patterns.compile(
    r"^.*(?:mail from|sender ok|sender address|envelope-from|\bfrom:|return-path:|reply-to:).*$",
    re.IGNORECASE | re.MULTILINE,
)
DAEMON = patterns.compile(
    r"^(mailer[-_]?daemon|mail[-_]?daemon|post[-_]?master|mdaemon|mail[-_]?delivery[-_]?(system|subsystem)?"
    r"|bounces?|nobody|noreply-?dmarc-?support|abuse)$",
    re.IGNORECASE,
)
DAEMON_NAME = patterns.compile(
    r"mail delivery (system|subsystem|service)|mailer[- ]daemon|postmaster|mail administrator"
    r"|system administrator|microsoft outlook|mail system|e-?mail delivery"
    r"|delivery (status|report)",
    re.IGNORECASE,
)
BOUNCE_SUBJECT = patterns.compile(
    r"undeliver|undelivered|not (be )?delivered|delivery (status notification|failure|failed"
    r"|has failed|problem|report|notification|incomplete)|returned mail|returned to sender"
    r"|mail delivery failed|failure notice|non[- ]?delivery|nondeliverable|delivery delayed"
    r"|delayed mail|warning: (message|could not)|mail system error|message not delivered"
    r"|delivery error|could not send|unable to deliver|rejected|bounce"
    r"|unzustellbar|nicht zustellbar|unzustellbare|zustellung|non remis|non distribu"
    r"|no se puede entregar|no entregado|non recapitat|onbestelbaar|niet afgeleverd",
    re.IGNORECASE,
)
BOUNCE_BODY = patterns.compile(
    r"mail delivery software|qmail-send program|permanent fatal errors|could not be delivered"
    r"|couldn't be delivered|delivery has failed|wasn't delivered|was not delivered"
    r"|did not reach the following|delivery to the following recipient|unable to deliver"
    r"|i'm afraid i wasn't able to deliver|failed permanently|cannot be delivered"
    r"|undeliverable|non-delivery|delivery failure|not yet been delivered|mail delivery failed"
    r"|konnte nicht zugestellt werden|n'a pas pu être (remis|distribué)|no se ha podido entregar"
    r"|non è stato possibile recapitare|kon niet worden afgeleverd"
    # an SMTP transcript or a relayed reply: only a delivery report quotes those
    r"|\brcpt to:|remote (host|server) (said|returned)|smtp error from remote"
    r"|requested action not taken|invalid (user|recipient) address",
    re.IGNORECASE,
)
#: A warning: delivery is still being tried. These win over words like "give up" that a
#: warning uses to say what will happen later.
WARNING = patterns.compile(
    r"warning message only|you do not need to resend|has not yet been delivered"
    r"|not been delivered yet|delivery attempts will continue|will (continue to )?(re)?try"
    r"|still (being )?(re)?tr(y|ied)|will keep trying|delivery (has been )?delayed"
    r"|\(delay\)|delayed mail|message delayed|\bdelayed \d+ (hours?|minutes?|days?)"
    r"|warning: (message|could not send message)|zustellung verzögert|noch nicht zugestellt"
    r"|distribution retardée|entrega retrasada",
    re.IGNORECASE,
)
_REMOTE_HOST = patterns.compile(
    r"\b(?:host|server|mta)[: ]+\[?([a-z0-9][\w-]*(?:\.[\w-]+)+)\]?\s*(?:\[|\(|said|:)",
    re.IGNORECASE,
)

#: An address the bounce points at as the failed one (group 1).
_CANDIDATES = [
    # on a line of its own: Exim, qmail, Sendmail, Exchange, Domino, Yahoo, O365
    patterns.compile(
        r"^[ \t]*[<\"']?(" + ADDRESS.pattern + r")[>\"']?:?[ \t]*"
        r"(?:\(.*\)|on .*|<mailto:[^>]*>|\[.*\]|\.)?[ \t]*$",
        re.MULTILINE,
    ),
    # "<addr>... User unknown", "<addr>: host mx said: 550 …", "addr: 550 …"
    patterns.compile(r"^[ \t]*<?(" + ADDRESS.pattern + r")>?[ \t]*(?:\.\.\.|:)[ \t]+\S",
                     re.MULTILINE),
    patterns.compile(r"<(" + ADDRESS.pattern + r")>(?:\.\.\.|:)[ \t]", re.MULTILINE),
    patterns.compile(r"RCPT TO:?[ \t]*<?(" + ADDRESS.pattern + r")", re.IGNORECASE),
    # "Your message to addr couldn't be delivered", "wasn't delivered to addr"
    patterns.compile(
        r"(?:message|mail|e-?mail) (?:to|for) <?(" + ADDRESS.pattern + r")>?,? "
        r"(?:couldn't|could not|can't|cannot|was not|wasn't|has not|hasn't|did not|didn't|failed)",
        re.IGNORECASE,
    ),
    patterns.compile(
        r"(?:not|n't) (?:be )?(?:delivered|reach(?:ed)?) (?:to)?:?\s*<?(" + ADDRESS.pattern + r")",
        re.IGNORECASE,
    ),
    patterns.compile(
        r"(?:^|\s)(?:failed |final |original )?(?:recipient|recipient address|destinataire"
        r"|empfänger|destinatario)(?:\(s\))?[ \t]*:[ \t]*<?(" + ADDRESS.pattern + r")",
        re.IGNORECASE | re.MULTILINE,
    ),
]


def candidate_addresses(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for pattern in _CANDIDATES:
        found.extend((m.start(1), m.group(1)) for m in pattern.finditer(text))
    ordered = [address for _, address in sorted(found)]
    return list(dict.fromkeys(ordered))


LINE_OF_ADDRESS = patterns.compile(
    r"^[ \t]*[<\"']?" + ADDRESS.pattern
    + r"[>\"']?:?[ \t]*(?:on .*|<mailto:[^>]*>|\(.*@.*\))?[ \t]*$"
)


#: A heading that starts another group of recipients or another section of the report
#: (Sendmail: "----- The following addresses had transient non-fatal errors -----").
_GROUP_HEADING = patterns.compile(r"^\s*[-=*|]{3,}.*[-=*|]{3,}\s*$")


def diagnostic_near(text: str, address: str, *, others: Sequence[str] = ()) -> str:
    """The lines next to each mention of ``address``: its own part of the report only.

    A window ends where the next failed recipient is named (in any form: on a line of its
    own, in ``RCPT To:<…>``, before its reason) or a new group or section begins, so in a
    report about several recipients each is judged by its own reason.
    """
    lines = text.splitlines()
    lowered = address.lower()
    stops = {o.lower() for o in others} - {lowered}
    windows: list[str] = []
    for index, line in enumerate(lines):
        if lowered not in line.lower():
            continue
        window = [line]
        blank = 0
        for following in lines[index + 1 : index + 14]:
            low = following.lower()
            if any(s in low for s in stops) or _GROUP_HEADING.match(following):
                break
            if CUT.match(following):
                break
            blank = blank + 1 if not following.strip() else 0
            if blank >= 3:
                break
            window.append(following)
        windows.append("\n".join(window).strip())
        if len(windows) >= 6:
            break
    return "\n".join(dict.fromkeys(windows))


def best_line(text: str) -> str:
    """The line that says why: one with an SMTP code, else one with a known wording.

    A reply folded over several lines (Postfix indents the rest, multi-line SMTP replies
    repeat the code with a dash: "550-5.1.1 … / 550 5.1.1 …") is joined into one.
    """
    lines = text.splitlines()
    candidates = [i for i, ln in enumerate(lines) if ln.strip() and not LINE_OF_ADDRESS.match(ln)]
    for index in candidates:
        line = lines[index]
        code = BASIC.search(line)
        failed = [m for m in ENHANCED.finditer(line) if m.group(1) != "2"]
        if not (failed or code):  # a transcript's "250 2.1.5 Ok" says nothing
            continue
        indent = len(line) - len(line.lstrip())
        parts = [line.strip()]
        for following in lines[index + 1 : index + 8]:
            stripped = following.strip()
            if code and stripped.startswith((f"{code.group(1)}-", f"{code.group(1)} ")):
                parts.append(_REPLY_PREFIX.sub("", stripped))
                continue
            following_indent = len(following) - len(following.lstrip())
            # Postfix indents the rest of a reply; Exim wraps it at the same indent.
            if not stripped or following_indent < indent or following_indent == indent == 0:
                break
            if BASIC.match(stripped) or stripped.startswith(("---", "***", "===")):
                break
            parts.append(stripped)
        return _from_the_code(" ".join(parts))[:1000]
    for index in candidates:
        if explain(None, "", lines[index]).explained:
            return lines[index].strip()[:1000]
    return lines[candidates[0]].strip()[:1000] if candidates else ""


def _from_the_code(line: str) -> str:
    """A long sentence that ends in the reply ("… the error that the other server returned
    was: 550 5.1.1 user unknown") is shown from the sentence that holds the code."""
    if len(line) <= 160:
        return line
    code = ENHANCED.search(line) or BASIC.search(line)
    if code is None:
        return line
    starts = [m.end() for m in _CLAUSE_END.finditer(line, 0, code.start())]
    return line[starts[-1]:] if starts else line


_CLAUSE_END = patterns.compile(r"[.!?:]\s+")
_REPLY_PREFIX = patterns.compile(r"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3} )?")

#: Sentences that advise or hedge ("the account may not exist, they may be blacklisted")
#: say what could be wrong in general, not what went wrong here.
_HEDGE = patterns.compile(
    r"\bmay\b|\bmight\b|\bpossibl[ey]\b|possible (causes?|reasons?)|if the problem"
    r"|for (further|more) (assistance|information|details)|include this problem report"
    r"|learn more|postmaster|help ?desk|your (e-?mail )?admin|contact the recipient"
    r"|by (some )?other means|automatically generated|do not reply|ne pas r[ée]pondre",
    re.IGNORECASE,
)
_SENTENCE_END = patterns.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def strip_boilerplate(text: str) -> str:
    """The report without its advice: lines with an SMTP code always stay."""
    out = []
    for line in text.splitlines():
        if ENHANCED.search(line) or BASIC.search(line) or not _HEDGE.search(line):
            out.append(line)
            continue
        out.append(" ".join(s for s in _SENTENCE_END.split(line) if not _HEDGE.search(s)))
    return "\n".join(out)


# --- reading the failed recipients ------------------------------------------------------------


def read_heuristic(msg: Message, raw: bytes, *, subject: str, text: str, sender_address: str,
                   addressed_to: list[str], original: Original,
                   ours: OurAddresses) -> list[FailedRecipient]:
    """The failed recipients a non-standard bounce names, each with the reason next to it."""
    excluded = _not_recipients(text, sender_address, addressed_to, original, ours)
    # Exim and Gmail name the failed addresses in a header: better than any guess.
    addresses = [a for _, a in getaddresses(
        [header_text(v) for v in msg.get_all("X-Failed-Recipients", [])]) if "@" in a]
    if not addresses:
        addresses = [a for a in candidate_addresses(text) if a.lower() not in excluded]
    if not addresses:
        addresses = [a for a in _flufl_addresses(msg, raw) if a.lower() not in excluded]
    warning = bool(WARNING.search(subject) or WARNING.search(text[:4000]))
    whole = strip_boilerplate(text)
    found: list[tuple[bool, FailedRecipient]] = []
    failures = list(dict.fromkeys(address(a) for a in addresses))
    for failed in failures:
        near = strip_boilerplate(diagnostic_near(text, failed, others=addresses))
        # A transcript that names no address belongs to the only recipient there is.
        stage = smtp_stage(near) or (smtp_stage(text) if len(failures) == 1 else "")
        verdict = explain(None, "", near, recipient=failed, stage=stage)
        own_reason = verdict.explained
        diagnostic = best_line(near)
        if not own_reason:
            overall = explain(None, "", whole, recipient=failed, stage=stage)
            if overall.explained or not diagnostic:
                verdict, diagnostic = overall, best_line(whole) or diagnostic
        if not verdict.explained:
            verdict = fallback(text) or verdict
        found.append((own_reason, _recipient(failed, verdict, diagnostic, near, warning)))
    # An address with no reason next to it, among others that have one, is a mention
    # (a helpdesk, a colleague), not a failure.
    if any(own for own, _ in found):
        found = [(own, r) for own, r in found if own]
    results = [r for _, r in found]
    if results:
        return results
    # A reason without an address ("550 5.1.1 User unknown" and nothing else): still a
    # bounce worth keeping, attributed by the VERP token or the quoted original.
    guess = original.recipients[0] if len(original.recipients) == 1 else ""
    verdict = explain(None, "", whole, recipient=guess)
    if not verdict.explained:
        verdict = fallback(text) or verdict
    if not verdict.explained:
        return []
    return [_recipient(address(guess), verdict, best_line(whole), whole, warning)]


def _recipient(failed: str, verdict: Verdict, diagnostic: str, near: str,
               warning: bool) -> FailedRecipient:
    klass = BounceClass.delayed if warning else verdict.bounce_class
    remote = _REMOTE_HOST.search(near)
    return FailedRecipient(
        recipient=failed, original_recipient="", action="", status=verdict.status,
        diagnostic=diagnostic[:2000], remote_mta=remote.group(1) if remote else "",
        bounce_class=klass, strength=verdict.strength if klass == BounceClass.hard else "",
    )


def _not_recipients(text: str, sender_address: str, addressed_to: list[str],
                    original: Original, ours: OurAddresses) -> set[str]:
    """Addresses a bounce mentions that are surely not the failed recipient."""
    excluded = {a.lower() for a in addressed_to}
    excluded |= {a.lower() for a in original.senders}
    excluded |= {sender_address.lower(), ours.from_email.lower()}
    if original.return_path:
        excluded.add(original.return_path.lower())
    for match in _SENDER_LINE.finditer(text):
        excluded.update(a.lower() for a in ADDRESS.findall(match.group(0)))
    bounce_domain = "@" + ours.bounce_domain.lower()
    reporter = _site(sender_address)
    return {a for a in excluded if a} | {
        a.lower() for a in ADDRESS.findall(text)
        if a.lower().endswith(bounce_domain)
        # The reporting system's own postmaster or daemon is a contact, not a failure; a
        # reader's postmaster@ at another domain may well be the address that failed.
        or (DAEMON.fullmatch(a.split("@")[0]) and (not reporter or _site(a) == reporter))
    }


def _site(address: str) -> str:
    """The last two labels of an address's domain: mail.isp.example and isp.example agree."""
    return ".".join(address.rpartition("@")[2].lower().split(".")[-2:])


def _flufl_addresses(msg: Message, raw: bytes) -> list[str]:
    try:
        from flufl.bounce import all_failures

        # Its detectors read every line: a huge returned attachment would cost seconds.
        if len(raw) > FLUFL_LIMIT:
            msg = email.message_from_bytes(raw[:FLUFL_LIMIT], policy=email.policy.compat32)
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd MIME is no reason to give up
        return []
    found = [a.decode("ascii", "replace") for a in sorted(permanent | temporary)]
    return [a for a in found if ADDRESS.fullmatch(a)]
