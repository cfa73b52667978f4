"""The confirmations queue: double opt-in mails, the welcome, and the preference page's
confirmation and data-export mails, never stuck behind a newsletter send."""

from __future__ import annotations

from mailer import backoff, tasks
from mailer.config import get_settings
from mailer.editions.service import latest_edition_link
from mailer.preferences.mails import send_data_export as send_export_mail
from mailer.preferences.mails import send_request_mail
from mailer.preferences.service import ACTIONS
from mailer.subscribers.confirmation_mail import MailResult, send_confirmation_mail
from mailer.subscribers.welcome_mail import send_welcome_mail
from workers.app import app


@app.task(name=tasks.SEND_CONFIRMATION, bind=True, max_retries=8)
def send_confirmation(self, subscriber_id: int) -> str:  # type: ignore[no-untyped-def]
    delay = backoff.CONFIRMATION_MAIL.seconds(self.request.retries)
    outcome = send_confirmation_mail(subscriber_id, settings=get_settings(), retry_in=delay)
    if outcome == MailResult.retry:
        # Once the retries run out, the sweeper queues the mail again after the delay.
        raise self.retry(countdown=delay)
    return str(outcome)


@app.task(name=tasks.SEND_WELCOME, bind=True, max_retries=8)
def send_welcome(self, subscriber_id: int, token_id: int) -> str:  # type: ignore[no-untyped-def]
    settings = get_settings()
    latest = latest_edition_link(settings.base_url)
    outcome = send_welcome_mail(subscriber_id, token_id, settings=settings, latest_edition=latest)
    if outcome == MailResult.retry:
        raise self.retry(countdown=backoff.CONFIRMATION_MAIL.seconds(self.request.retries))
    return str(outcome)


@app.task(name=tasks.SEND_PREFERENCE_REQUEST, bind=True, max_retries=8)
def send_preference_request(self, subscriber_id: int, action: str,  # type: ignore[no-untyped-def]
                            round_: int) -> str:
    if action not in ACTIONS:
        return str(MailResult.nothing)
    outcome = send_request_mail(subscriber_id, action, round_,  # type: ignore[arg-type]
                                settings=get_settings())
    if outcome == MailResult.retry:
        raise self.retry(countdown=backoff.CONFIRMATION_MAIL.seconds(self.request.retries))
    return str(outcome)


@app.task(name=tasks.SEND_DATA_EXPORT, bind=True, max_retries=8)
def send_data_export(self, subscriber_id: int, round_: int) -> str:  # type: ignore[no-untyped-def]
    outcome = send_export_mail(subscriber_id, round_, settings=get_settings())
    if outcome == MailResult.retry:
        raise self.retry(countdown=backoff.CONFIRMATION_MAIL.seconds(self.request.retries))
    return str(outcome)
