"""Classifying one failure: the rules of standards.md ("Bounces and complaints") on the
replies real servers give. The sending pipeline calls classify_reply on live SMTP replies,
the bounce parser calls classify on each DSN recipient.
"""

from __future__ import annotations

import pytest

from mailer.bounces.classify import (
    basic_code,
    best_status,
    classify,
    classify_reply,
    enhanced_status,
    explain,
)
from mailer.bounces.models import BounceClass

H, S, P, D = BounceClass.hard, BounceClass.soft, BounceClass.policy, BounceClass.delayed

REPLIES = [
    # hard: the mailbox or the domain does not exist (5.1.1, 5.1.2, 5.1.6, 5.1.10, wordings)
    (550, "5.1.1 <a@example.net>: Recipient address rejected: User unknown in local table", H),
    (550, "5.1.2 Host unknown (Name server: example.invalid: host not found)", H),
    (550, "5.1.6 Recipient has moved, no forwarding address", H),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", H),
    (550, "5.4.4 Unable to route: no mail hosts for domain", H),
    (550, "No such user here", H),
    (550, "Requested action not taken: mailbox unavailable", H),
    (554, "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]", H),
    (550, "5.7.1 No such user", H),  # the wording wins over a policy code
    (550, "Empfänger unbekannt", H),
    (550, "Utilisateur inconnu", H),
    (550, "Il destinatario non esiste: utente sconosciuto", H),
    (550, "El usuario no existe", H),
    (550, "Adres odbiorcy nie istnieje", H),
    (550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", H),
    (550, "This account has been deleted", H),
    (550, "5.1.1 user is no longer with the company", H),
    # soft: temporary, mailbox full (4.2.2 / 5.2.2 and wordings), unexplained permanent
    (452, "4.2.2 The email account that you tried to reach is over quota", S),
    (552, "5.2.2 Mailbox full", S),
    (550, "user is over quota. (#5.1.1)", S),  # the wording wins over the code
    (552, "Postfach voll", S),
    (552, "La boîte aux lettres du destinataire est pleine", S),
    (550, "Casella di posta piena", S),
    (421, "4.3.0 Temporary System Problem. Try again later", S),
    (451, "4.7.1 Greylisted, please try again in 300 seconds", S),
    (450, "4.1.1 <a@example.net>: Recipient address rejected: unverified address", S),
    (552, "5.3.4 Message size exceeds fixed limit", S),
    (550, "5.2.1 The email account that you tried to reach is disabled", S),
    (554, "30 Sorry, your message cannot be delivered. This mailbox is disabled (554.30)", S),
    (550, "5.1.1 Account suspended", S),
    (554, "Transaction failed", S),  # a 5xx is not a hard bounce by itself
    (550, "Error: 0x8004010F", S),
    # policy: the sender's problem, never suppresses
    (550, "5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org", P),
    (550, "5.7.26 This mail has been blocked because the sender is unauthenticated", P),
    (550, "5.7.509 Access denied, sending domain example.org does not pass DMARC verification", P),
    (553, "5.7.1 [BL21] Connections will not be accepted from 192.0.2.10", P),
    (421, "4.7.0 [TSS04] Messages temporarily deferred due to user complaints", P),
    (421, "4.7.28 Gmail has detected an unusual rate of unsolicited mail", P),
    (550, "5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent ... block list (S3140)", P),
    (554, "Message rejected as spam by Content Filtering", P),
    (550, "Administrative prohibition - envelope blocked", P),
    (550, "5.1.8 <nl@example.org>: Sender address rejected: Domain not found", P),
    (550, "<nl@example.org>: Sender address rejected: User unknown in local recipient table", P),
    (554, "5.7.1 Relay access denied", P),
    (550, "High probability of spam; user unknown", P),  # spam beats "unknown"
    (550, "Message refused", P),
    # the same causes in the languages providers answer in
    (550, "Адрес получателя не найден", H),
    (550, "用户不存在", H),
    (550, "Empfaengeradresse ungueltig", H),
    (552, "Почтовый ящик переполнен", S),
    (550, "Le compte est désactivé", S),
    (550, "5.4.4 Host found but no data record of requested type", H),
]


@pytest.mark.parametrize(("code", "reply", "expected"), REPLIES)
def test_classify_reply(code: int, reply: str, expected: BounceClass) -> None:
    klass, status = classify_reply(code, reply)
    assert klass == expected, explain(code, status, reply).rule
    assert status == enhanced_status(reply)


def test_a_5xx_without_explanation_is_not_hard() -> None:
    for reply in ("Requested action aborted", "Transaction failed", "Rejected", ""):
        assert classify(550, "", reply) != BounceClass.hard


def test_dsn_status_field_and_diagnostic_together() -> None:
    assert classify(None, "5.0.0", "550-5.1.1 The email account that you tried to reach does "
                                   "not exist.") == H
    assert classify(None, "5.1.1", "") == H
    assert classify(None, "4.4.7", "") == S
    assert classify(None, "5.7.1", "") == P
    assert classify(None, "2.0.0", "250 ok") == D  # nothing failed


def test_best_status_keeps_the_reporting_mtas_verdict_on_permanence() -> None:
    assert best_status("5.0.0", "550 5.1.1 user unknown") == "5.1.1"
    assert best_status("5.0.0", "450 4.2.2 over quota") == "5.0.0"
    assert best_status("5.2.2", "550 5.1.1 ...") == "5.2.2"
    assert best_status("", "smtp; 550 5.1.10 RecipientNotFound") == "5.1.10"
    assert best_status("junk", "") == ""


def test_enhanced_and_basic_codes_are_found_in_free_text() -> None:
    assert enhanced_status("550-5.1.1 ... 550 5.1.1 ...") == "5.1.1"
    assert enhanced_status("550 5.0.0 <a@b>... 5.1.1 User unknown") == "5.1.1"
    assert enhanced_status("version 1.2.3.4 of 10.5.1.2") == ""
    assert enhanced_status("(#5.5.0)") == "5.5.0"
    assert basic_code("host mx[192.0.2.250] said: 550 no") == 550
    assert basic_code("Tue, 03 Mar 2026 09:00:12 +0100 nothing") is None
    assert basic_code("port 587 open") is None


def test_every_verdict_says_which_rule_decided() -> None:
    verdict = explain(550, "", "No such user here")
    assert verdict.explained and "unknown" in verdict.rule
    fallback = explain(550, "", "Error 0x8004010F")
    assert not fallback.explained and fallback.bounce_class == S
