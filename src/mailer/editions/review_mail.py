"""The mail that asks the editors to review a drafted edition (``templates/email/edition-ready``).

One mail per active editor, each recorded in the audit log once the SMTP server accepted
it (``edition.review_mail``), so a task that runs again mails only those still waiting.
The envelope sender is the newsletter's own address: this is staff mail, not a delivery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from mailer.config import get_settings
from mailer.db import transaction
from mailer.editions.models import Edition
from mailer.emails.kinds import MessageKind
from mailer.emails.message import build_message, message_id, to_bytes
from mailer.emails.render import render_email
from mailer.emails.transport import SMTPFailure, process_transport
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


def review_url(edition_id: int) -> str:
    return f"{get_settings().base_url}/admin/editions/{edition_id}"


def send_review_mails(edition_id: int) -> list[Mailed]:
    """Mail every active editor who has not been mailed about this edition yet."""
    settings = get_settings()
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            return []
        done = set(session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == ACTION, AuditEntry.target == f"edition:{edition_id}")))
        editors = [(u.id, u.email) for u in accounts.editors(session)]
        rendered = render_email(
            "edition-ready", settings=settings, edition=edition,
            articles=[link.article.title for link in edition.articles],
            window=window_label(edition.window_start, edition.window_end),
            review_url=review_url(edition_id))
    results = []
    transport = process_transport()
    for user_id, email in editors:
        if email in done:
            results.append(Mailed(email, "already"))
            continue
        payload = to_bytes(build_message(
            to_email=email, subject=rendered.subject, text=rendered.text, html=rendered.html,
            msg_id=message_id(MessageKind.review, edition_id, user_id)))
        try:
            transport.send(settings.from_email, email, payload)
        except SMTPFailure as failure:
            kind = "retry" if failure.temporary else "failed"
            results.append(Mailed(email, f"{kind}: {failure}"))
            log.warning("review mail to %s not sent: %s", email, failure,
                        extra={"edition_id": edition_id, "smtp_code": failure.code})
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
