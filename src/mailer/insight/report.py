"""The report on an edition whose send has finished, mailed to the editors
(``templates/email/edition-report``) and printed by ``mailer report EDITION``.

The same figures as the edition's insight page, as they stand when the send finishes:
delivered, deferred (and the minute with the most deferrals), bounced by class, complaints,
unsubscribes, the most followed links (clicks keep coming for days: the page has the
latest). One mail per active editor, recorded in the audit log once the SMTP server
accepted it (``edition.report_mail``), so a task that runs again mails only those still
waiting; two running at once do not both mail an editor, as each takes a five-minute claim
in Redis first. Staff mail: sent from the newsletter's own address, with no VERP token (its
registry entry has no letter).

The task is published when the send finishes; a broker that is away then (or a Redis
that loses the message) loses it. Beat's sweep queues it again (:func:`requeue_lost_reports`)
for an edition sent ten minutes to two days ago that no editor has been mailed about.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import tasks
from mailer.config import Settings
from mailer.db import transaction, utcnow
from mailer.editions.models import Edition, EditionState
from mailer.emails.kinds import MessageKind
from mailer.emails.send import render, send_one
from mailer.insight.editions import EditionFigures, edition_figures, summarise
from mailer.redis import get_redis
from mailer.staff import accounts
from mailer.staff.audit import record
from mailer.staff.models import AuditEntry

log = logging.getLogger(__name__)
ACTION = "edition.report_mail"
TOP_LINKS = 5
#: A report nobody was mailed this long after the send finished was lost: the task takes
#: seconds, and its own retries for a relay that is away keep the editors' turn.
RESEND_AFTER = dt.timedelta(minutes=10)
#: Sends that finished longer ago are not reported again (an editor who joins later is not
#: mailed about last month's edition).
RESEND_WINDOW = dt.timedelta(days=2)
#: The sweep queues an edition's report at most this often (and not again for the window
#: once the relay refused it for good).
REQUEUE_EVERY_SECONDS = 3600
#: One editor's mail is being sent: a second task at the same moment waits.
CLAIM_SECONDS = 300
HOLD_PREFIX = "mailer:report:"


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
        *_peak(figures),
        ("Bounced", f"{bounced['hard']:,} hard, {bounced['soft']:,} soft, "
                    f"{bounced['policy']:,} policy"),
        ("Complaints", f"{figures.complaints:,}"),
        ("Unsubscribed from it", f"{figures.unsubscribes:,}"),
        ("Clicks on its links", f"{figures.clicks:,}"),
    ]


def _peak(figures: EditionFigures) -> list[tuple[str, str]]:
    """The minute with the most deferrals, and the domain that deferred most in it."""
    minutes: dict[str, Counter[str]] = {}
    for minute, domain, n in figures.deferrals_per_minute:
        minutes.setdefault(minute, Counter())[domain] += n
    if not minutes:
        return []
    minute, domains = max(minutes.items(), key=lambda m: (m[1].total(), m[0]))
    domain, most = domains.most_common(1)[0]
    return [("Most deferrals in a minute",
             f"{domains.total():,} at {minute} UTC ({most:,} by {domain})")]


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
    redis = get_redis()
    for user_id, email in editors:
        if email in done:
            results.append(Mailed(email, "already"))
            continue
        claim = f"{HOLD_PREFIX}claim:{edition_id}:{user_id}"
        if not redis.set(claim, "sending", nx=True, ex=CLAIM_SECONDS):
            results.append(Mailed(email, "retry: another task is mailing this editor"))
            continue
        sent = send_one(MessageKind.report, email, {}, ids=[edition_id, user_id],
                        identity=settings.identity, keys=settings.all_secrets,
                        smtp=settings.smtp, rendered=rendered)
        if sent.failure is not None:
            redis.delete(claim)
            kind = "retry" if sent.temporary else "failed"
            results.append(Mailed(email, f"{kind}: {sent.failure}"))
            log.warning("report mail to %s not sent: %s", email, sent.failure,
                        extra={"edition_id": edition_id, "smtp_code": sent.code})
            if not sent.temporary:  # refused for good: the sweeper does not try it again
                redis.set(f"{HOLD_PREFIX}{edition_id}", "refused",
                          ex=int(RESEND_WINDOW.total_seconds()))
            continue
        with transaction() as session:
            # The actor is the editor mailed: the audit row doubles as "already mailed".
            record(session, actor=email, action=ACTION, target=f"edition:{edition_id}",
                   detail={"by": "send finished"})
        results.append(Mailed(email, "sent"))
    return results


def reports_to_resend(session: Session, *, older_than: dt.timedelta = RESEND_AFTER,
                      window: dt.timedelta = RESEND_WINDOW) -> list[int]:
    """The editions sent between ``window`` and ``older_than`` ago whose report no editor
    has been mailed: the ones whose task was lost. None while there is no editor to mail."""
    now = utcnow()
    finished = session.scalars(
        select(Edition.id).where(Edition.state == EditionState.sent,
                                 Edition.finished_at <= now - older_than,
                                 Edition.finished_at > now - window)
        .order_by(Edition.id)).all()
    if not finished or not accounts.editors(session):
        return []
    mailed = set(session.scalars(select(AuditEntry.target).where(
        AuditEntry.action == ACTION,
        AuditEntry.target.in_([f"edition:{edition_id}" for edition_id in finished]))))
    return [edition_id for edition_id in finished if f"edition:{edition_id}" not in mailed]


def requeue_lost_reports() -> int:
    """Queue again the reports whose task was lost (the sweeper's part); how many.
    Published now: a broker that is away raises, and the next sweep tries again."""
    with transaction() as session:
        lost = reports_to_resend(session)
    queued = 0
    for edition_id in lost:
        if get_redis().set(f"{HOLD_PREFIX}{edition_id}", "requeued", nx=True,
                           ex=REQUEUE_EVERY_SECONDS):
            tasks.publish(tasks.REPORT_EDITION, edition_id, session=None)
            queued += 1
    return queued
