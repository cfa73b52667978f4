"""The mail that asks the editors to review a drafted edition (``templates/email/edition-ready``).

One mail per active editor, each recorded in the audit log once the SMTP server accepted
it (``edition.review_mail``), so a task that runs again mails only those still waiting.
The envelope sender is the newsletter's own address: this is staff mail, not a delivery
(its registry entry has no VERP letter; ``mailer.emails.send.send_one`` sends it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from mailer.config import Settings
from mailer.db import transaction
from mailer.editions.models import Edition
from mailer.emails.kinds import MessageKind
from mailer.emails.send import render, send_one
from mailer.localtime import window_label
from mailer.staff import accounts
from mailer.staff.audit import record
from mailer.staff.models import AuditEntry

log = logging.getLogger(__name__)
ACTION = "edition.review_mail"


@dataclass(frozen=True)
class Mailed:
    to: str
    result: str  # sent, already, failed: …, retry: …

    @property
    def temporary(self) -> bool:
        return self.result.startswith("retry")


def review_url(edition_id: int, *, base_url: str) -> str:
    return f"{base_url}/admin/editions/{edition_id}"


def send_review_mails(edition_id: int, *, settings: Settings) -> list[Mailed]:
    """Mail every active editor who has not been mailed about this edition yet, with
    ``settings`` (the admin's address, the sender, the SMTP relay)."""
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            return []
        done = set(session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == ACTION, AuditEntry.target == f"edition:{edition_id}")))
        editors = [(u.id, u.email) for u in accounts.editors(session)]
        rendered = render(MessageKind.review, dict(
            settings=settings, edition=edition,
            articles=[link.article.title for link in edition.articles],
            window=window_label(edition.window_start, edition.window_end,
                                zone=settings.identity.zone),
            review_url=review_url(edition_id, base_url=settings.base_url)))
    results = []
    for user_id, email in editors:
        if email in done:
            results.append(Mailed(email, "already"))
            continue
        # Rendered once for every editor; each mail has its own Message-ID.
        sent = send_one(MessageKind.review, email, {}, ids=[edition_id, user_id],
                        identity=settings.identity, keys=settings.all_secrets,
                        smtp=settings.smtp, rendered=rendered)
        if sent.failure is not None:
            kind = "retry" if sent.temporary else "failed"
            results.append(Mailed(email, f"{kind}: {sent.failure}"))
            log.warning("review mail to %s not sent: %s", email, sent.failure,
                        extra={"edition_id": edition_id, "smtp_code": sent.code})
            continue
        with transaction() as session:
            # The actor is the editor mailed: the audit row doubles as "already mailed".
            record(session, actor=email, action=ACTION, target=f"edition:{edition_id}",
                   detail={"by": "schedule"})
        results.append(Mailed(email, "sent"))
    if not editors:
        log.warning("edition %s drafted, but there is no editor to tell: create one with "
                    "`mailer staff create EMAIL`", edition_id, extra={"edition_id": edition_id})
    return results
