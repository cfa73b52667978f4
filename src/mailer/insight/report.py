"""The report on an edition whose send has finished, mailed to the editors
(``templates/email/edition-report``) and printed by ``mailer report EDITION``.

The same figures as the edition's insight page, as they stand when the send finishes:
delivered, deferred, bounced by class, complaints, unsubscribes, the most followed links
(clicks keep coming for days: the page has the latest). One mail per active editor,
recorded in the audit log once the SMTP server accepted it (``edition.report_mail``), so
a task that runs again mails only those still waiting. Staff mail: sent from the
newsletter's own address, with no VERP token (its registry entry has no letter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from mailer.config import Settings
from mailer.db import transaction
from mailer.emails.kinds import MessageKind
from mailer.emails.send import render, send_one
from mailer.insight.editions import EditionFigures, edition_figures, summarise
from mailer.staff import accounts
from mailer.staff.audit import record
from mailer.staff.models import AuditEntry

log = logging.getLogger(__name__)
ACTION = "edition.report_mail"
TOP_LINKS = 5


@dataclass(frozen=True)
class Mailed:
    to: str
    result: str  # sent, already, failed: …, retry: …

    @property
    def temporary(self) -> bool:
        return self.result.startswith("retry")


def insight_url(edition_id: int, *, base_url: str) -> str:
    return f"{base_url}/admin/editions/{edition_id}/insight"


def lines(figures: EditionFigures) -> list[tuple[str, str]]:
    """The report's figures as (what, how many): the mail's and the terminal's."""
    bounced = figures.bounced
    share = (lambda n: f" ({100 * n / figures.audience:.1f} %)") if figures.audience else (
        lambda n: "")
    return [
        ("Readers in the audience", f"{figures.audience:,}"),
        ("Delivered", f"{figures.delivered:,}{share(figures.delivered)}"),
        ("Deferred at least once", f"{figures.deferred:,}"),
        ("Bounced", f"{bounced['hard']:,} hard, {bounced['soft']:,} soft, "
                    f"{bounced['policy']:,} policy"),
        ("Complaints", f"{figures.complaints:,}"),
        ("Unsubscribed from it", f"{figures.unsubscribes:,}"),
        ("Clicks on its links", f"{figures.clicks:,}"),
    ]


def context(figures: EditionFigures, settings: Settings) -> dict[str, Any]:
    return {
        "settings": settings, "figures": figures, "lines": lines(figures),
        "links": [link for link in figures.links if link.clicks][:TOP_LINKS],
        "refusing": [d for d in sorted(figures.domains, key=lambda d: -(d.deferred + d.refused))
                     if d.deferred or d.refused][:3],
        "insight_url": insight_url(figures.edition_id, base_url=settings.base_url),
    }


def send_report_mails(edition_id: int, *, settings: Settings) -> list[Mailed]:
    """Sum the edition's figures (once) and mail every active editor not mailed yet, with
    ``settings`` (the admin's address, the sender, the SMTP relay)."""
    with transaction() as session:
        summarise(session, edition_id)
    with transaction() as session:
        figures = edition_figures(session, edition_id)
        if figures is None:
            return []
        done = set(session.scalars(select(AuditEntry.actor).where(
            AuditEntry.action == ACTION, AuditEntry.target == f"edition:{edition_id}")))
        editors = [(u.id, u.email) for u in accounts.editors(session)]
    rendered = render(MessageKind.report, context(figures, settings))
    results = []
    for user_id, email in editors:
        if email in done:
            results.append(Mailed(email, "already"))
            continue
        sent = send_one(MessageKind.report, email, {}, ids=[edition_id, user_id],
                        identity=settings.identity, smtp=settings.smtp, rendered=rendered)
        if sent.failure is not None:
            kind = "retry" if sent.temporary else "failed"
            results.append(Mailed(email, f"{kind}: {sent.failure}"))
            log.warning("report mail to %s not sent: %s", email, sent.failure,
                        extra={"edition_id": edition_id, "smtp_code": sent.code})
            continue
        with transaction() as session:
            # The actor is the editor mailed: the audit row doubles as "already mailed".
            record(session, actor=email, action=ACTION, target=f"edition:{edition_id}",
                   detail={"by": "send finished"})
        results.append(Mailed(email, "sent"))
    return results
