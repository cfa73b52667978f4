"""The default queue: periodic housekeeping started by beat. Every task is idempotent."""

from __future__ import annotations

import datetime as dt
import logging

from mailer import backoff, privacy, tasks
from mailer.db import transaction
from mailer.subscribers.confirmation import confirmations_to_resend
from mailer.subscribers.welcome_mail import requeue_lost_welcomes
from workers.app import app

log = logging.getLogger(__name__)


@app.task(name=tasks.SWEEP)
def sweep() -> dict[str, object]:
    """Put back to work what a dead worker or a lost Redis message left behind."""
    from mailer.config import get_settings
    from mailer.delivery import sweeper
    from mailer.insight.report import requeue_lost_reports
    from mailer.ops.queues import depth
    from mailer.redis import get_redis

    with transaction() as session:
        stranded = confirmations_to_resend(session, older_than=dt.timedelta(minutes=2))
    for subscriber_id in stranded:
        tasks.publish(tasks.SEND_CONFIRMATION, subscriber_id, session=None)
    welcomes = requeue_lost_welcomes(signup=get_settings().signup)
    bulk_queue_empty = depth(get_redis(), tasks.BULK) == 0
    with transaction() as session:
        report = sweeper.sweep(session, get_settings(), bulk_queue_empty=bulk_queue_empty)
    reports = requeue_lost_reports()  # after the deliveries: those matter most
    if report.reclaimed or report.retried or report.requeued or report.finished or report.started:
        log.info("sweep: %s", report.as_dict())
    if welcomes:
        log.info("sweep: %d lost welcome mail(s) queued again", welcomes)
    if reports:
        log.info("sweep: %d lost edition report(s) queued again", reports)
    return {"confirmations": len(stranded), "welcomes": welcomes, "reports": reports,
            **report.as_dict()}


@app.task(name=tasks.PURGE_PENDING_SIGNUPS)
def purge_pending_signups() -> int:
    from mailer.config import get_settings

    days = get_settings().signup.purge_pending_after_days
    with transaction() as session:
        purged = privacy.purge_pending(session, older_than=dt.timedelta(days=days))
    if purged:
        log.info("purged %d unconfirmed sign-ups", purged)
    return purged


@app.task(name=tasks.POLL_FEEDS)
def poll_feeds() -> dict[str, int]:
    """Import what is new from the configured feeds (MAILER_FEED_URLS).

    Safe to run twice: articles are keyed by guid and unchanged items are left alone. A feed
    that cannot be read is logged and the others are still imported.
    """
    from sqlalchemy.exc import IntegrityError

    from mailer.articles import feeds, importer
    from mailer.config import get_settings

    totals = {"created": 0, "updated": 0, "unchanged": 0, "problems": 0, "failed": 0}
    settings = get_settings()
    for url in settings.articles.feed_urls:
        try:  # fetched outside the transaction
            feed = feeds.load(url, settings.articles, website_url=settings.identity.website_url)
        except feeds.FeedError as exc:
            log.error("feed not imported: %s", exc)
            totals["failed"] += 1
            continue
        try:
            with transaction() as session:
                report = importer.import_feed(session, feed)
        except IntegrityError:  # a concurrent poll stored the same new item first
            with transaction() as session:
                report = importer.import_feed(session, feed)
        for problem in report.problems:
            log.warning("%s: %s", url, problem)
        log.info("%s", report.summary())
        totals["created"] += report.created
        totals["updated"] += report.updated
        totals["unchanged"] += report.unchanged
        totals["problems"] += len(report.problems)
    return totals


@app.task(name=tasks.DRAFT_NEXT_EDITION)
def draft_next_edition() -> str:
    """Beat's bi-monthly run: draft the next edition and ask the editors to review it.

    Nothing is sent. Safe to run twice: one run per day of the schedule drafts anything
    (see :mod:`mailer.editions.rhythm`).
    """
    from mailer.editions import rhythm

    with transaction() as session:
        chosen = [lst.id for lst in rhythm.lists_on_the_setting(session)]
    return "; ".join(_draft_for(list_id) for list_id in chosen) or "no list follows the setting"


@app.task(name=tasks.DRAFT_LIST_EDITIONS)
def draft_list_editions() -> str:
    """Beat's hourly run: draft the next edition of each list whose own rhythm fired in
    the last hour (``MailingList.schedule_cron``)."""
    from mailer.config import get_settings
    from mailer.editions import rhythm

    with transaction() as session:
        chosen = [lst.id for lst in rhythm.lists_due(
            session, timezone=get_settings().identity.timezone)]
    return "; ".join(_draft_for(list_id) for list_id in chosen) or "no list is due"


def _draft_for(list_id: int) -> str:
    """One list's scheduled draft, in a transaction of its own; the editors are asked."""
    from mailer.config import get_settings
    from mailer.editions import rhythm
    from mailer.lists.models import MailingList

    with transaction() as session:
        result = rhythm.draft_on_schedule(session, identity=get_settings().identity,
                                          mailing_list=session.get(MailingList, list_id))
        if result.drafted:
            tasks.publish(tasks.MAIL_EDITORS, result.edition_id, session=session)
    return result.outcome


@app.task(name=tasks.MAIL_EDITORS, bind=True, max_retries=8)
def mail_editors(self, edition_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Mail every editor a link to review the drafted edition (each editor once)."""
    from mailer.config import get_settings
    from mailer.editions.review_mail import send_review_mails

    results = send_review_mails(edition_id, settings=get_settings())
    if any(r.temporary for r in results):
        raise self.retry(countdown=backoff.REVIEW_MAIL.seconds(self.request.retries))
    return [f"{r.to}: {r.result}" for r in results]


@app.task(name=tasks.REPORT_EDITION, bind=True, max_retries=8)
def report_edition(self, edition_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    """An edition's send has finished: sum its delivery figures once, and mail each editor
    the report (each once, however often this runs)."""
    from mailer.config import get_settings
    from mailer.insight.report import send_report_mails

    results = send_report_mails(edition_id, settings=get_settings())
    if any(r.temporary for r in results):
        raise self.retry(countdown=backoff.REPORT_MAIL.seconds(self.request.retries))
    return [f"{r.to}: {r.result}" for r in results]


@app.task(name=tasks.FLUSH_CLICKS)
def flush_clicks() -> int:
    """The clicks counted in Redis, into the database; exactly once, however often it runs."""
    from mailer.clicks import counting
    from mailer.redis import get_redis

    moved = counting.flush(get_redis())
    if moved:
        log.info("flushed %d link requests", moved)
    return moved
