"""The words servers use, grouped by what they mean. :mod:`mailer.bounces.classify` decides
with them; this module only says which phrase means what.

Each group is written from the wordings MTAs and providers document (Postfix, Exim,
Sendmail, qmail, Exchange and Exchange Online NDR codes, Gmail, Yahoo, Outlook.com, the
big European and Asian providers, the filtering gateways), in the languages our readers'
servers answer in. A phrase is only as specific as it has to be: "unknown" alone says
nothing, "user unknown" does.
"""

from __future__ import annotations

import re

from mailer.bounces import patterns


def words(*phrases: str) -> patterns.Pattern[str]:
    """One case-insensitive pattern from regular-expression phrases, one phrase per line."""
    return patterns.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


#: Hedged claims are no evidence: "the account may not exist" is advice, not a finding.
_NOT_HEDGED = r"(?<!may )(?<!might )(?<!possibly )(?<!may no longer )"

#: The rejection is about us (sender address, sending host, authentication, our own
#: sending limits), even when it also says "does not exist" ("Sender address rejected:
#: Domain not found").
SENDER_SIDE = words(
    r"sender (address |domain |e-?mail (address )?)?(rejected|denied|unknown|invalid|blocked)",
    r"sender (address |domain )?not (allowed|accepted|authori[sz]ed)",
    r"sender (verify|verification) failed|sender is spammer|rejected sender|unroutable sender",
    r"(domain of )?sender (address|domain) (\S+ )?(does not exist|not found|must (exist|resolve))",
    r"in reply to mail from|after mail from|mail from command",
    r"client host( \S+)? (rejected|blocked)|helo command rejected|reverse dns",
    r"ptr (resource )?record",
    r"\brdns\b|cannot find your (reverse )?host ?name",
    r"your (ip|ip address|host|server|mail server|network)\b",
    r"exceeded the max(imum)? (number of )?(e-?mails|messages|recipients) per (hour|day)",
)

#: "550 : User unknown", "550 <>: User unknown": the server echoes the recipient it means,
#: and the slot is empty. It names nobody, so it is no evidence about this reader.
EMPTY_SLOT = patterns.compile(
    r"\b[45]\d\d[ -]+(?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?:<>\s*:?|:)\s*"
    r"(?:user|recipient|mailbox|address)\b[^\n.]{0,25}?\b(?:unknown|not found|invalid)",
    re.IGNORECASE,
)

#: The mailbox is unknown. After DATA these words come from content and sender filters
#: (policy); at RCPT, or with a 5.1.x code, they mean the mailbox does not exist.
MAILBOX_UNKNOWN = words(
    r"user(name)? unknown",
    r"unknown (user|recipient|mailbox|local[- ]?part|address|e-?mail address|alias)",
    r"no such (user|mailbox|recipient|address|person)|unknown or illegal alias",
    r"(recipient|mailbox|address|user) (\S+ )?(is )?(unknown|invalid|not valid)",
    r"not a valid (mailbox|recipient|user|address|e-?mail)",
    r"invalid (recipient|mailbox|user|address|e-?mail address)|invalid final delivery userid",
    r"bad (destination )?(mailbox|recipient|address)",
    r"(user|recipient|mailbox|address|account) (\S+ )?not found",
    r"not found in (the )?(directory|address book)",
    r"recipient name is not recognized|recip(ient)?notfound|exrecipnotfound",
    r"couldn't be found|could not be found|wasn't found at|was not found at",
    r"mailbox (is )?(unavailable|not (present|available))|mailbox unavailable",
    r"no mailbox (here|by that name|found|available)",
    r"no one at this address|not (a )?known user|is not a local (user|address)|not our customer",
    r"not listed in (the )?(domino directory|public name|name and address|address book|directory)",
    r"please check if (the )?(e-?mail )?address is correct",
    # German, French, Spanish, Portuguese, Italian, Dutch
    r"(empf(ä|ae)nger|benutzer|adresse|postfach|konto|mailbox)\S* (ist )?"
    r"(unbekannt|nicht vorhanden)",
    r"unbekannte[rn]? (empf(ä|ae)nger|benutzer|adresse)",
    r"(utilisateur|destinataire|adresse|bo[iî]te( aux lettres)?) (\S+ )?"
    r"(inconnu|inexistant|introuvable|invalide)",
    r"(usuario|usu[aá]rio|destinatari[oa]|destinat[aá]rio|buz[oó]n|cuenta|direcci[oó]n) (\S+ )?"
    r"(desconocid|inexistent)",
    r"utente (sconosciuto|inesistente)|indirizzo (inesistente|non valido)",
    r"(gebruiker|adres|ontvanger|mailbox) (\S+ )?onbekend",
    r"(adresse|empf(ä|ae)nger|benutzer)\S* (ist )?ung(ü|ue)ltig|usu[aá]rio (\S+ )?desconhecid",
    # Russian, Chinese (as Yandex, Mail.ru, QQ and NetEase word them in their own language)
    r"(пользовател|адрес|ящик|получател)\w* (\S+ )?не (найден|существует)",
    r"нет такого (пользователя|ящика|адреса)|用户不存在|收件人不存在|邮箱不存在",
)

#: The account or the mailbox does not exist (any more), said in so many words: hard
#: even after DATA (Yahoo and AOL say "dd This user doesn't have a … account" there).
ACCOUNT_GONE = words(
    _NOT_HEDGED + r"(does not|doesn't|did not) exist",
    _NOT_HEDGED + r"\bnot exist\b",
    r"non-?existent (user|mailbox|address|recipient|account)|no such account",
    r"(doesn't|does not) have an? \S+ account|no account by that name",
    r"account (\S+ )?(has been |was )?(deleted|closed|terminated|removed|discontinued|cancell?ed)",
    r"no longer (exists|active|valid|in use|available|accepts? mail|with|employed|works)",
    # a Postfix server answering DATA after it refused every RCPT
    r"no valid recipients",
    r"existiert nicht|gibt es nicht|n'existe (pas|plus)|no existe|n[aã]o existe|non esiste",
    r"bestaat niet|nie istnieje|neexistuje|finns inte|findes ikke|finnes ikke|ei ole olemassa",
    r"odbiorca nie istnieje",
)

#: The domain does not exist or takes no mail: strong evidence.
DOMAIN_GONE = words(
    r"nxdomain|no such domain|(unknown|non-?existent) domain|nonexistentdomain",
    r"domain (name )?(not found|unknown|does not exist|doesn't exist|is not (valid|registered))",
    r"dns domain \S+ does not exist|domain \S+ (does not|doesn't) exist",
    r"host (or domain name )?not found(?!, try again)|host unknown|unknown host",
    r"couldn't find any host named|could not find any host named",
    r"unroute?able (address|domain)|\bunroute?able\b(?! sender)",
    r"null ?mx|does not accept (e-?)?mail|indicated no smtp service",
    r"no (mx|mail exchanger) or a records?|no (mx|mail exchanger|dns) (record|host|entry)",
    r"name or service not known|no mail hosts for domain",
)

#: The domain could not be reached or resolved, in words that leave room for doubt:
#: hard under a permanent code (the sender gave up), but weak evidence.
DOMAIN_DOUBTFUL = words(
    r"host (or domain name )?not found, try again|unable to look up host",
    r"mx records? points? to non-?existent hosts|no data record of requested type",
    r"could not be found in (the )?(domain name service|dns)",
)

#: Wordings that only say the address was refused. They decide only when nothing more
#: specific is said, and only weakly: servers use them for blocks too. Postfix's
#: "Recipient address rejected: <reason>" is decided by the reason after the colon.
ADDRESS_REFUSED = words(
    r"(recipient|address|recipient address) (rejected|not accepted)|address rejected",
    r"recipient (address )?not (accepted|recogni[sz]ed)",
    r"<[^<>\s@]+@[^<>\s]+>\s*rejected\b",
)

#: "Recipient address rejected:" heads a reason (Postfix's access maps); Exchange Online's
#: "5.4.1 Recipient address rejected: Access denied" is its directory-based edge blocking.
RECIPIENT_REJECTED = words(r"recipient address rejected\s*:?")

#: The mailbox exists but is full, or the server's disk is.
MAILBOX_FULL = words(
    r"mailbox (is |was )?full|full mailbox|(mail ?box|inbox|mailfolder|storage) (is )?full",
    r"over ?quota|overquota|quota (exceeded|exceed|full|violation|limit)",
    r"exceed\S* (\S+ )?(quota|storage|disk space|mailbox size)",
    r"insufficient (system |disk )?(storage|space)|out of (storage|space|disk)",
    r"not enough (storage|space|disk)|disk (is )?full|no space left|file ?system (is )?full",
    r"mail system full|mailbox size limit|disk quota|space has been used up|too much mail data",
    r"has too many messages|out of storage space",
    r"(postfach|mailbox|speicher)\S* (ist )?(voll|überfüllt|ueberfuellt)|speicherplatz",
    r"kontingent|quota überschritten",
    r"bo[iî]te (aux lettres |mail )?(du destinataire )?(est )?pleine",
    r"quota d[ée]pass[ée]|espace (de stockage )?insuffisant",
    r"buz[oó]n (est[aá] )?llen|casilla (est[aá] )?llena|caixa (postal )?(est[aá] )?(cheia|lotada)",
    r"casella (di posta )?(\S+ )?piena|spazio insufficiente|mailbox (is )?vol\b|postvak (is )?vol",
    r"(почтовый )?ящик (\S+ )?переполнен|邮箱(已满|空间不足)",
)

#: The account exists but is disabled, suspended or held: it may come back.
SUSPENDED = words(
    r"\b(is|been|was|currently|temporarily) "
    r"(disabled|suspended|inactive|deactivated|locked|frozen|on hold)",
    r"account (is )?(disabled|suspended|inactive|deactivated|locked|frozen)",
    r"(disabled|suspended|inactive) (account|mailbox|user)",
    r"mailbox (is )?(disabled|suspended|inactive|frozen|on hold)|extended inactivity",
    r"temporarily (inactive|unavailable)|\bon hold\b",
    r"(compte|bo[iî]te) (\S+ )?(d[ée]sactiv[ée]e?|suspendue?|bloqu[ée]e?)",
    r"(konto|postfach)\S* (ist )?(gesperrt|deaktiviert)",
)

#: The recipient's own delivery program or transport failed: the server's trouble, not a
#: missing mailbox (whatever the program printed).
LOCAL_DELIVERY = words(
    r"command died with status|command output:|child process of \S+ transport",
    r"(delivery|local|mailbox) (program|agent) (failed|error|returned)|procmail|maildrop",
    r"mail(er)? transport (unavailable|failed)|transport unavailable|\bmailer error\b",
    r"unable to (deliver to|write to) (the )?mailbox|error writing (message|to mailbox)",
)

#: Name-server trouble: temporary by nature, whatever code the relay put on it.
NAME_SERVER = words(
    r"name ?server (error|failure|timeout|time-?out|problem)|servfail|serverfailure",
    r"dns (error|failure|lookup failed|query failed|problem|timeout|time-?out)(?!.*nxdomain)",
    r"(host )?name lookup failure|temporary (dns|name resolution|lookup) failure",
    r"temporary failure in name resolution|malformed or unexpected name server reply",
    r"no answer from (the )?name ?server",
)

#: The sender's problem, said plainly: blocked, spam-filtered, unauthenticated,
#: reputation, or the recipient's own preferences. These win over a "user unknown" in the
#: same reply.
POLICY = words(
    r"spam|\bube\b|\buce\b|unsolicited|bulk (e-?)?mail|junk",
    r"block ?list|black ?list|blocklisted|blacklisted|\bdnsbl|\brbl\b",
    r"spamhaus|spamcop|barracuda reputation|sorbs|uceprotect",
    r"(?<!not )\blisted (at|on|in|by)\b|\[(bl|ts|tss|gl|ps|hm|cs)\d+\]|\bblocked\b",
    r"reputation|dmarc|\bspf\b|\bdkim\b|unauthenticated|authentication (required|failed|failure)",
    r"not authenticated|must authenticate|authentication level|anti-?spoofing",
    r"relay(ing)? (access )?denied|unable to relay|relaying not allowed",
    r"policy|prohibit|content (rejected|filter|denied)|message content",
    r"virus|malware|phish|suspicious|illegal attachment|infected",
    r"rate limit|rate-limit|too many (messages|connections|recipients|mails)",
    r"unusual rate|sending limit|complaints",
    # the recipient's own rules and settings
    r"recipient'?s? (preferences|settings|rules|filter)|user entry|envelope blocked",
    r"chosen not to receive|does not (wish|want) to receive|refuses to accept mail",
    r"only accepts messages from|not allowed to (receive|post)|permission to (post|send)",
    r"delivery (to this address )?is restricted|external forwarding|notauthorized",
)
#: Words that lean to policy but also appear in "no such user" replies ("Recipient address
#: rejected: Access denied"): they decide only when nothing names the cause.
POLICY_WEAK = words(
    r"denied|refused|not accepted|rejected (by|due to|for|as)|message rejected",
    r"not (authori[sz]ed|permitted)|banned|volume|filter|permission",
)

#: Temporary trouble, whatever the code says: the sender tried long enough.
TEMPORARY = words(
    r"try again|temporar|greylist|graylist|defer|busy|timed? ?out|time-?out|expired",
    r"connection (refused|reset|lost|closed|dropped)|could(n't| not) connect|no route",
    r"network (error|is unreachable)|loop|hop count|too many hops",
    r"too (large|big)|size (limit|exceeds)|exceeds? (the )?(maximum|size)",
    r"resources|system (error|failure|not available)|local (error|problem)",
    r"service (not available|unavailable)|retry|giving up on|delivery time|queue",
    r"could not (be )?deliver(ed)? .{0,60}for (the last|more than|over) \d+",
    r"time limit|did not accept our requests to connect|not accepting network messages",
)
GREYLIST = words(r"gr[ae]ylist|try (again )?later|please retry|come back later")

#: The SMTP stage a reply was given at, as each MTA writes it.
STAGE_AFTER_DATA = words(
    r"in reply to (end of )?data command|after (end of )?data\b|after pipelined data",
    r"\[body\]|failed after i sent the message|for (text|data) command|after end of data",
)
STAGE_RCPT = words(
    r"in reply to rcpt to command|after (pipelined )?rcpt to|\[rcpt_to\]|does not like recipient",
    r"for rcpt to command",
)
STAGE_MAIL = words(r"in reply to mail from command|after mail from|\[mail_from\]")
#: A transcript: ">>> RCPT To:<…>" / "<<< 550 …" (Sendmail, Courier), "--> DATA" /
#: "<-- 552 …" (MDaemon).
TRANSCRIPT_COMMAND = patterns.compile(r"^\W*(?:>>>|-->)\s*(RCPT|DATA|MAIL|EHLO|HELO)\b",
                                re.IGNORECASE | re.MULTILINE)
TRANSCRIPT_REPLY = patterns.compile(r"^\W*(?:<<<|<--)\s*[45]\d\d\b", re.MULTILINE)

#: Sentences worth keeping although they hedge: cPanel's permanent-failure page says only
#: this when the remote gave no reason.
HEDGED_ACCOUNT_GONE = words(r"the account or domain may not exist")
