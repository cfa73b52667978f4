"""Classifying one failure (an SMTP reply, or one recipient of a DSN) into a BounceClass.

A 5xx is not a hard bounce by itself: hard means the mailbox or the domain does not exist
(5.1.1, 5.1.2, 5.1.6, 5.1.10 and their wordings). Policy and authentication rejections
(5.7.x, 4.7.x: blocked, spam, DMARC, reputation) are the sender's problem and never
suppress a reader. Mailbox full (4.2.2 / 5.2.2) and other temporary trouble is soft.

The rules look at three things, in this order of trust: the RFC 3463 enhanced status code,
the wording of the reply, and the basic SMTP code. Servers disagree about codes far more
than about words ("550 5.7.1 No such user", "550 Requested action not taken: mailbox
unavailable", "554 delivery error: dd This user doesn't have a yahoo.com account"), so a
wording that names the cause can override a vague code, never the other way round. When in
doubt the answer is the one that suppresses nobody at once: an unexplained permanent
failure is soft (counted; three of them suppress), a rejection that mentions the sender or
a block list is policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailer.bounces.classes import BounceClass

ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
BASIC = re.compile(r"(?<![\w.#-])([45][0-5]\d)(?=[ -]|$)", re.MULTILINE)

# Enhanced status codes (RFC 3463 and the codes big providers use) whose meaning is clear.
_HARD_STATUSES = {
    "5.1.1",  # bad destination mailbox address
    "5.1.2",  # bad destination system address (the domain does not exist)
    "5.1.3",  # bad destination mailbox address syntax
    "5.1.6",  # destination mailbox has moved, no forwarding address
    "5.1.10",  # Microsoft: RecipientNotFound; RFC 7505: the domain has a null MX
    "5.4.4",  # unable to route: no MX and no address for the domain
}
_SOFT_STATUSES = {"4.2.2", "5.2.2", "5.2.3", "5.3.4", "4.4.1", "4.4.2", "4.4.7", "5.4.7"}
#: About our side of the transaction: the sender's address or system.
_SENDER_STATUSES = {"5.1.7", "5.1.8", "4.1.7", "4.1.8"}



def _words(*phrases: str) -> re.Pattern[str]:
    """One case-insensitive pattern from regular-expression phrases, one phrase per line."""
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


#: The rejection is about us (sender address, sending host, authentication), even when it
#: also says "does not exist": "Sender address rejected: Domain not found".
_SENDER_SIDE = _words(
    r"sender (address |domain |e-?mail (address )?)?(rejected|denied|unknown|invalid|blocked)",
    r"sender (address |domain )?not (allowed|accepted|authori[sz]ed)",
    r"sender (verify|verification) failed|sender is spammer|rejected sender|unroutable sender",
    r"(domain of )?sender (address|domain) (does not exist|not found|must (exist|resolve))",
    r"in reply to mail from|after mail from|mail from command",
    r"client host( \S+)? (rejected|blocked)|helo command rejected|reverse dns|ptr record|\brdns\b",
    r"your (ip|ip address|host|server|mail server|network)\b",
)

#: The mailbox or the domain does not exist (any more).
_HARD_WORDS = _words(
    r"user(name)? unknown|unknown user|no such (user|mailbox|recipient|address|account|person)",
    r"unknown (recipient|mailbox|local[- ]?part|address|e-?mail address|alias)",
    r"(user|mailbox|recipient|account|address|alias)( name)?( \S+)? "
    r"(does not|doesn't|did not) exist",
    r"does not exist|doesn't exist|not exist\b|non-?existent (user|mailbox|address|recipient)",
    r"(user|recipient|mailbox|address|account) (\S+ )?not found",
    r"not found in (the )?(directory|address book)",
    r"(recipient|mailbox|address|user) (\S+ )?(is )?(unknown|invalid|not valid)",
    r"not a valid (mailbox|recipient|user|address|e-?mail)",
    r"invalid (recipient|mailbox|user|address|e-?mail address)",
    r"bad (destination )?(mailbox|recipient|address)",
    r"address (rejected|invalid|unknown|not (found|available))",
    r"recipient (address )?(rejected|not (accepted|recogni[sz]ed))",
    r"recipient name is not recognized|recip(ient)?notfound",
    r"couldn't be found|could not be found|wasn't found at|was not found at",
    r"mailbox (is )?(unavailable|not (present|available))|mailbox unavailable",
    r"no mailbox (here|by that name|found|available)|no account by that name",
    r"no one at this address|not a known user|is not a local (user|address)",
    r"not listed in (the )?(domino directory|public name|name and address|address book|directory)",
    r"(doesn't|does not) have an? \S+ account",
    r"account (\S+ )?(has been |was )?(deleted|closed|terminated|removed|discontinued|cancell?ed)",
    r"no longer (exists|active|valid|in use|available|accepts? mail|with|employed|works)",
    # the domain
    r"unroutable|unrouteable|host (or domain name )?(not found|unknown)|unknown host",
    r"domain (name )?(not found|unknown|is not (valid|registered))|no such domain|unknown domain",
    r"no (mx|mail exchanger|dns) (record|host|entry)|name or service not known|null mx|nxdomain",
    r"does not accept (e-?)?mail",
    # German, French, Spanish, Portuguese, Italian, Dutch
    r"(empfänger|benutzer|adresse|postfach|konto|mailbox)\S* (ist )?"
    r"(unbekannt|existiert nicht|nicht vorhanden)",
    r"unbekannte[rn]? (empfänger|benutzer|adresse)|existiert nicht|gibt es nicht",
    r"(utilisateur|destinataire|adresse|bo[iî]te( aux lettres)?) (\S+ )?"
    r"(inconnu|inexistant|introuvable|invalide)",
    r"n'existe (pas|plus)",
    r"(usuario|usu[aá]rio|destinatari[oa]|destinat[aá]rio|buz[oó]n|cuenta|direcci[oó]n) (\S+ )?"
    r"(desconocid|inexistent)",
    r"no existe|n[aã]o existe|utente (sconosciuto|inesistente)|non esiste",
    r"indirizzo (inesistente|non valido)",
    r"(gebruiker|adres|ontvanger|mailbox) (\S+ )?onbekend|bestaat niet",
    # Polish, Czech, Swedish, Danish/Norwegian, Finnish
    r"nie istnieje|neexistuje|finns inte|findes ikke|finnes ikke|ei ole olemassa",
)

#: Wordings that say "rejected" more than "does not exist": servers also use them for blocks.
_HARD_WEAK = _words(
    r"(recipient|address|recipient address) (rejected|not accepted)|address rejected",
    r"mailbox (is )?(unavailable|not available)|mailbox unavailable|invalid recipient",
)

#: The mailbox exists but is full.
_FULL_WORDS = _words(
    r"mailbox (is |was )?full|full mailbox|(mail ?box|inbox|mailfolder|storage) (is )?full",
    r"over ?quota|quota (exceeded|exceed|full|violation|limit)",
    r"exceed\S* (\S+ )?(quota|storage|disk space|mailbox size)",
    r"insufficient (system )?storage|out of (storage|space|disk)|not enough (storage|space|disk)",
    r"mailbox size limit|disk quota|space has been used up|too much mail data",
    r"has too many messages",
    r"(postfach|mailbox|speicher)\S* (ist )?(voll|überfüllt|ueberfuellt)|speicherplatz",
    r"kontingent|quota überschritten",
    r"bo[iî]te (aux lettres |mail )?(du destinataire )?(est )?pleine",
    r"quota d[ée]pass[ée]|espace (de stockage )?insuffisant",
    r"buz[oó]n (est[aá] )?llen|casilla (est[aá] )?llena|caixa (postal )?(est[aá] )?(cheia|lotada)",
    r"casella (di posta )?(\S+ )?piena|spazio insufficiente|mailbox (is )?vol\b|postvak (is )?vol",
)

#: The account exists but is disabled or suspended: it may come back.
_SUSPENDED_WORDS = _words(
    r"\b(is|been|was|currently|temporarily) "
    r"(disabled|suspended|inactive|deactivated|locked|frozen)",
    r"account (is )?(disabled|suspended|inactive|deactivated|locked|frozen)",
    r"(disabled|suspended|inactive) (account|mailbox|user)",
    r"mailbox (is )?(disabled|suspended|inactive|frozen)|extended inactivity",
    r"temporarily (inactive|unavailable)",
)

#: The sender's problem, said plainly: blocked, spam-filtered, unauthenticated, reputation.
#: These win over a "user unknown" in the same reply.
_POLICY_STRONG = _words(
    r"spam|\bube\b|\buce\b|unsolicited|bulk (e-?)?mail|junk",
    r"block ?list|black ?list|blocklisted|blacklisted|\bdnsbl|\brbl\b",
    r"spamhaus|spamcop|barracuda|sorbs|uceprotect",
    r"(?<!not )\blisted (at|on|in|by)\b|\[(bl|ts|tss|gl|ps)\d+\]|\bblocked\b",
    r"reputation|dmarc|\bspf\b|\bdkim\b|unauthenticated|authentication (required|failed|failure)",
    r"not authenticated|must authenticate",
    r"relay(ing)? (access )?denied|unable to relay|relaying not allowed",
    r"policy|prohibit|content (rejected|filter|denied)|message content",
    r"virus|malware|phish|suspicious|illegal attachment",
    r"rate limit|rate-limit|too many (messages|connections|recipients|mails)",
    r"unusual rate|sending limit|complaints",
)
#: Words that lean to policy but also appear in "no such user" replies ("Recipient address
#: rejected: Access denied"): they decide only when nothing names the cause.
_POLICY_WEAK = _words(
    r"denied|refused|not accepted|rejected (by|due to|for|as)|message rejected",
    r"not (authori[sz]ed|permitted)|banned|volume|filter",
)

#: Temporary trouble, whatever the code says.
_SOFT_WORDS = _words(
    r"try again|temporar|greylist|graylist|defer|busy|timed? ?out|time-?out|expired",
    r"connection (refused|reset|lost|closed|dropped)|could(n't| not) connect|no route",
    r"network (error|is unreachable)|loop|hop count",
    r"too (large|big)|size (limit|exceeds)|exceeds? (the )?(maximum|size)",
    r"resources|system (error|failure|not available)|local (error|problem)",
    r"service (not available|unavailable)|retry|giving up on|delivery time|queue",
)
_GREYLIST = _words(r"gr[ae]ylist|try (again )?later|please retry")
_RECIPIENT_REJECTED = _words(r"recipient address rejected")


@dataclass(frozen=True)
class Verdict:
    """A class with the rule that gave it: ops read the rule when a bounce puzzles them."""

    bounce_class: BounceClass
    status: str
    rule: str

    @property
    def explained(self) -> bool:
        """False when no code and no wording said anything: the class is only a default."""
        return not self.rule.startswith("default")


def enhanced_status(text: str) -> str:
    """The most specific RFC 3463 enhanced status code in ``text`` ('' when there is none).

    "550 5.0.0 ... 550 5.1.1 ..." → "5.1.1": a detail of 0 says less than any other.
    """
    best = ""
    for match in ENHANCED.finditer(text or ""):
        status = ".".join(match.groups())
        if not best or (_vague(best) and not _vague(status)):
            best = status
        if not _vague(best):
            break
    return best


def basic_code(text: str) -> int | None:
    """The first three-digit SMTP reply code (4xx or 5xx) in ``text``."""
    match = BASIC.search(text or "")
    return int(match.group(1)) if match else None


def _vague(status: str) -> bool:
    return status.endswith(".0.0") or status.endswith(".0")


def best_status(field: str, text: str) -> str:
    """A DSN's Status field refined by the code in its diagnostic.

    Many servers put a vague "5.0.0" in the Status field and the real code in the
    Diagnostic-Code ("550-5.1.1 The email account that you tried to reach does not exist").
    The field's class (permanent or temporary) is kept: it is what the reporting MTA decided.
    """
    field = (field or "").strip()
    found = enhanced_status(text)
    if not ENHANCED.fullmatch(field):
        return found
    if found and _vague(field) and not _vague(found) and found[0] == field[0]:
        return found
    return field


def explain(code: int | None, status: str, text: str) -> Verdict:
    """Classify a failure and say which rule decided it."""
    text = text or ""
    status = best_status(status, text)
    if code is None:
        code = basic_code(text)
    klass = status[:1] or (str(code)[:1] if code else "")

    def verdict(bounce_class: BounceClass, rule: str) -> Verdict:
        return Verdict(bounce_class, status, rule)

    if klass == "2":
        return verdict(BounceClass.delayed, "2.x.x: nothing failed")
    if status in _SENDER_STATUSES or _SENDER_SIDE.search(text):
        return verdict(BounceClass.policy, "about the sender, not the reader")
    policy = _POLICY_STRONG.search(text)
    if klass == "4":
        if _GREYLIST.search(text):
            return verdict(BounceClass.soft, "greylisted: try again later")
        if status.startswith("4.7."):
            return verdict(BounceClass.policy, f"{status}: temporary policy rejection")
        if policy:
            return verdict(BounceClass.policy, f"temporary, worded as policy: {policy.group(0)!r}")
        return verdict(BounceClass.soft, f"{status or code}: temporary failure")
    full = _FULL_WORDS.search(text)
    if status in ("4.2.2", "5.2.2") or full:
        return verdict(BounceClass.soft, "mailbox full" + (f": {full.group(0)!r}" if full else ""))
    suspended = _SUSPENDED_WORDS.search(text)
    hard = _HARD_WORDS.search(text)
    if status in _HARD_STATUSES:
        if suspended:
            return verdict(BounceClass.soft, f"{status}, but the account is {suspended.group(0)!r}")
        if policy and not hard:
            return verdict(BounceClass.policy,
                           f"{status}, but worded as policy: {policy.group(0)!r}")
        return verdict(BounceClass.hard, f"{status}: mailbox or domain does not exist")
    if status == "5.4.1" and _RECIPIENT_REJECTED.search(text):
        # Exchange Online's directory-based edge blocking: the address is not in the tenant.
        return verdict(BounceClass.hard, "5.4.1 recipient address rejected: not in the directory")
    if status.startswith("5.7."):
        # Only a plain "no such user" overrides a security code; "Recipient address
        # rejected: Access denied" under 5.7.1 is a block, not a missing mailbox.
        unknown = next((m for m in _HARD_WORDS.finditer(text)
                        if not _HARD_WEAK.fullmatch(m.group(0))), None)
        if unknown and not policy and not _POLICY_WEAK.search(text):
            return verdict(BounceClass.hard,
                           f"{status}, but worded as unknown: {unknown.group(0)!r}")
        return verdict(BounceClass.policy, f"{status}: security or policy rejection")
    if status in _SOFT_STATUSES:
        return verdict(BounceClass.soft, f"{status}: temporary or size problem")
    if policy:
        return verdict(BounceClass.policy, f"worded as policy: {policy.group(0)!r}")
    if suspended:
        return verdict(BounceClass.soft, f"account {suspended.group(0)!r}: it may come back")
    if hard:
        return verdict(BounceClass.hard, f"worded as unknown: {hard.group(0)!r}")
    weak = _POLICY_WEAK.search(text)
    if weak:
        return verdict(BounceClass.policy, f"worded as a refusal: {weak.group(0)!r}")
    soft = _SOFT_WORDS.search(text)
    if soft:
        return verdict(BounceClass.soft, f"worded as temporary: {soft.group(0)!r}")
    if klass == "4":
        return verdict(BounceClass.soft, f"{code}: temporary failure")
    if klass == "5":
        return verdict(BounceClass.soft,
                       f"default: {status or code} permanent but unexplained, counted")
    return verdict(BounceClass.soft, "default: no code and no known wording, counted")


def classify(code: int | None, status: str, text: str) -> BounceClass:
    """Classify a failure from its basic SMTP code, enhanced status and wording."""
    return explain(code, status, text).bounce_class


def classify_reply(code: int | None, reply: str) -> tuple[BounceClass, str]:
    """An SMTP server's reply during our own send → (class, enhanced status)."""
    verdict = explain(code, enhanced_status(reply), reply)
    return verdict.bounce_class, verdict.status
