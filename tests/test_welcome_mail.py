"""The welcome mail (MAILER_WELCOME_MAIL): one registry entry and one template folder.

Confirmed through the service as the confirm page does, with the setting on; sent by a real
worker to the tests' SMTP server, after the confirm's commit; sent once however often its
task runs; a bounce of it is tied to the reader by its own VERP token and Message-ID; one
whose task was lost (Redis down at the confirm) is queued again by beat's sweep."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer import counters, tasks
from mailer.bounces.attribute import attribute
from mailer.config import Settings, get_settings
from mailer.db import transaction
from mailer.emails.verp import parse_return_path
from mailer.redis import get_redis
from mailer.subscribers.confirmation import confirm, confirmation_token_value
from mailer.subscribers.confirmation_mail import MailResult
from mailer.subscribers.models import ConfirmationToken
from mailer.subscribers.unsubscribe import preferences_url, unsubscribe, unsubscribe_url_for
from mailer.subscribers.welcome_mail import (
    HOLD_PREFIX,
    RESEND_WINDOW,
    requeue_lost_welcomes,
    send_welcome_mail,
    welcomes_to_resend,
)
from tests.conftest import wait_for, wait_settled
from tests.support.bounce_reading import OURS, parse_bounce
from tests.support.factories import FIRST_LIST, stack_keys
from tests.support.mail import links, parse, parts
from tests.support.subscribers import (
    confirmation_link,
    events,
    list_status,
    make,
    move_back,
    path,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
    tokens,
)

CORPUS = Path(__file__).parent / "fixtures" / "bounces"
OLD_VERP = "bounces+d2n-k3zx5u2m7n4p6rva@bounces.cep-probation.example.org"
OLD_MID = "<nl.12.3455.5d1f0c9e2b7a48e6a1c3f2d4@cep-probation.example.org>"
OLD_RCPT = "anna.berg@example.net"


def with_welcome(on: bool) -> Settings:
    """The stack's settings, with the welcome mail on or off (the stack turns it off)."""
    settings = get_settings()
    return settings.model_copy(
        update={"signup": settings.signup.model_copy(update={"welcome_mail": on})})


@pytest.fixture
def welcome_on() -> Settings:
    return with_welcome(True)


def _sign_up_and_confirm(clean, web, address: str,  # type: ignore[no-untyped-def]
                         settings: Settings | None = None) -> int:
    import httpx

    client = httpx.Client(base_url=web.url, follow_redirects=False)
    answer = client.post("/subscribe", data={"email": address, "first_name": "Ida",
                                             "consent": "yes"})
    assert answer.status_code == 200, answer.text
    token = path(confirmation_link(clean.smtp, address)).rsplit("/", 1)[1]
    with transaction() as session:  # what POST /confirm/<token> does
        check = confirm(session, token, ip=None, user_agent=None,
                        signup=(settings or get_settings()).signup, keys=stack_keys())
        assert check.status == "ok" and check.token is not None
        return check.token.id


def test_a_reader_who_confirms_is_welcomed_once_and_a_bounce_of_it_attributes(
        clean, web, worker, welcome_on) -> None:
    address = "ida.welcome@example.org"
    token_id = _sign_up_and_confirm(clean, web, address, welcome_on)
    sub = subscriber(address)
    assert sub is not None and list_status(address) == "confirmed"

    mails = wait_for(lambda: (m := clean.smtp.to(address)) and len(m) >= 2 and m,
                     what="the welcome mail")
    welcome = mails[1]
    msg = parse(welcome)
    assert msg["Subject"].startswith("Welcome to the ")
    assert msg["Message-ID"].startswith(f"<welcome.{sub.id}.{token_id}.")
    assert msg["List-Unsubscribe-Post"] is None  # not a newsletter
    token = parse_return_path(welcome.mail_from, keys=stack_keys())
    assert welcome.mail_from.startswith("bounces+w")
    assert token and token.kind == "welcome" and token.id == sub.id
    text, html = parts(msg)
    assert "Ida" in text and "Ida" in html
    [unsubscribe] = [u for u in links(text) if "/unsubscribe/" in u]
    assert unsubscribe == unsubscribe_url_for(sub.public_id, base_url=welcome_on.base_url,
                                              keys=stack_keys(), list_id=FIRST_LIST)
    assert unsubscribe in html
    [preferences] = [u for u in links(text) if "/preferences/" in u]
    assert preferences == preferences_url(sub, base_url=welcome_on.base_url, keys=stack_keys())
    assert preferences in html
    # No edition has been sent yet: no archive link, and no sentence about one.
    assert "/archive/" not in text and "/archive/" not in html and "archive" not in text
    wait_for(lambda: "welcome_sent" in events(sub.id), what="the welcome recorded")
    # Counted under its own kind, as send_one counts every kind (flushed at the task's end).
    wait_for(lambda: counters.smtp_figures(kind="welcome")["codes"].get("250") == 1,
             what="the welcome mail counted")
    assert counters.smtp_figures(kind="welcome")["count"] == 1

    # The task running again (a redelivered message, a retry) sends nothing more.
    assert send_welcome_mail(sub.id, token_id, settings=welcome_on) == MailResult.nothing
    assert len(clean.smtp.to(address)) == 2
    assert events(sub.id).count("welcome_sent") == 1

    # A bounce of it ties to the reader: by its VERP token, and by its Message-ID alone.
    template = (CORPUS / "postfix-user-unknown.eml").read_text(encoding="utf-8")
    for verp in (welcome.mail_from, "newsletter-bounces@bounces.cep-probation.example.org"):
        raw = template.replace(OLD_VERP, verp).replace(OLD_MID, msg["Message-ID"]).replace(
            OLD_RCPT, address).encode()
        report = parse_bounce(raw)
        with transaction() as session:
            tie = attribute(session, report, report.recipients[0], ours=OURS, keys=stack_keys())
        assert tie.subscriber_id == sub.id and not tie.unverified, tie
        assert tie.method == ("verp" if verp == welcome.mail_from else "message-id"), tie
        assert "welcome mail" in tie.note and tie.delivery_id is None


def test_no_welcome_when_the_setting_is_off_or_the_reader_left(clean, web, worker) -> None:
    address = "no.welcome@example.org"
    token_id = _sign_up_and_confirm(clean, web, address)
    sub = subscriber(address)
    assert sub is not None
    with transaction() as session:
        assert session.scalar(select(ConfirmationToken.used_at).where(
            ConfirmationToken.id == token_id)) is not None
    # The setting is off here (the test stack turns it off; the default is on: below); and a
    # reader who has left is not welcomed.
    with transaction() as session:
        reader = session.get(type(sub), sub.id)
        assert unsubscribe(session, reader, list_id=None, channel="link")
    assert send_welcome_mail(sub.id, token_id, settings=get_settings()) == MailResult.nothing
    assert len(clean.smtp.to(address)) == 1  # the confirmation mail alone
    assert "welcome_sent" not in events(sub.id)


def test_a_copy_of_the_task_that_finds_the_claim_taken_sends_nothing_and_retries(
        clean, web) -> None:
    """Two copies at once (a redelivery while the first still runs): the second finds the
    first's claim and retries; once the first is done, a retry finds its record."""
    from mailer.redis import get_redis
    from mailer.subscribers.welcome_mail import CLAIM_PREFIX

    address = "ida.twice@example.org"
    # Confirmed with the setting off, so no task is queued that a worker could run: the
    # copies below are the only ones.
    token_id = _sign_up_and_confirm(clean, web, address)
    settings = with_welcome(True)
    sub = subscriber(address)
    assert sub is not None
    claim = f"{CLAIM_PREFIX}{sub.id}:{token_id}"
    get_redis().set(claim, "sending", ex=60)  # the first copy, still at work
    assert send_welcome_mail(sub.id, token_id, settings=settings) == MailResult.retry
    assert len(clean.smtp.to(address)) == 1  # the confirmation mail alone
    get_redis().delete(claim)  # the first copy ends (here: without having sent)

    assert send_welcome_mail(sub.id, token_id, settings=settings) == MailResult.sent
    assert send_welcome_mail(sub.id, token_id, settings=settings) == MailResult.nothing
    assert len(clean.smtp.to(address)) == 2
    assert events(sub.id).count("welcome_sent") == 1
    assert get_redis().get(claim) is None  # the claim is given back after the send


def test_the_welcome_mail_is_on_by_default() -> None:
    from mailer.config import load_settings

    assert load_settings({}, env_file=None).signup.welcome_mail is True
    off = load_settings({"MAILER_WELCOME_MAIL": "false"}, env_file=None)
    assert off.signup.welcome_mail is False


def test_by_default_a_confirmed_reader_is_welcomed_with_the_latest_editions_archive_link(
        clean, worker) -> None:
    """The web app with the default settings (the stack turns the mail off for the other
    tests): sign up and confirm over HTTP; the session's worker sends the welcome mail to
    the tests' SMTP server, linking the newest sent edition's archive page."""
    import httpx

    from mailer.editions.models import Edition
    from tests.support.bounce_mail import make_sent_edition
    from tests.support.processes import WebServer, free_port

    older, newest = make_sent_edition(), make_sent_edition()
    with transaction() as session:
        for edition_id, subject in ((older, "The older one"), (newest, "The newest one")):
            edition = session.get(Edition, edition_id)
            edition.subject = subject
            edition.archive_html = "<p>archived</p>"
            edition.finished_at = edition.window_end
        session.get(Edition, older).finished_at -= dt.timedelta(days=60)
        slug = session.get(Edition, newest).slug
    make_sent_edition(state="sending")  # going out, not yet the latest sent

    env = {k: v for k, v in clean.env.items() if k != "MAILER_WELCOME_MAIL"}
    server = WebServer(env, clean.tmp / "web-default.log", free_port()).start()
    try:
        client = httpx.Client(base_url=server.url, follow_redirects=False, timeout=10)
        address = "default.welcome@example.org"
        answer = client.post("/subscribe", data={"email": address, "first_name": "Ida",
                                                 "consent": "yes"})
        assert answer.status_code == 200, answer.text
        done = client.post(path(confirmation_link(clean.smtp, address)))
        assert done.status_code == 200 and list_status(address) == "confirmed"
    finally:
        server.stop()

    mails = wait_for(lambda: (m := clean.smtp.to(address)) and len(m) >= 2 and m,
                     what="the welcome mail")
    msg = parse(mails[1])
    assert msg["Message-ID"].startswith("<welcome.")
    text, html = parts(msg)
    archive_url = f"{clean.base_url}/archive/{slug}"
    assert archive_url in links(text) and f'href="{archive_url}"' in html
    assert "The newest one" in text and "The newest one" in html
    assert "The older one" not in text
    wait_for(lambda: "welcome_sent" in events(subscriber(address).id),
             what="the welcome recorded")


# --- a welcome whose task was lost ---------------------------------------------------------


def test_a_welcome_lost_while_the_broker_was_down_is_sent_once_by_the_sweeper(
        clean, rig, welcome_on, caplog) -> None:
    """Redis, the broker, is down when the confirm commits: the confirmation stands and its
    welcome task is lost (logged). Once Redis is back, beat's sweep queues the welcome again
    and a real worker sends it, once, however many sweeps follow."""
    address = "ida.lost@example.org"
    reader = make(address, "pending", first_name="Ida")
    [token] = tokens(reader.id)
    rig.redis.stop()  # the broker goes away (SIGKILL: nothing it held survives)
    tasks.reset()
    with transaction() as session:  # what POST /confirm/<token> does
        check = confirm(session, confirmation_token_value(token, keys=stack_keys()), ip=None,
                        user_agent=None, signup=welcome_on.signup, keys=stack_keys())
        assert check.status == "ok"
    assert "could not publish a task after commit" in caplog.text
    sub = subscriber(address)
    assert sub is not None and list_status(address) == "confirmed"
    rig.redis.start()  # back, and empty: the task is nowhere
    tasks.reset()
    with transaction() as session:  # the sweeper gives a task five minutes to arrive
        assert welcomes_to_resend(session) == []
    move_back(sub.id, dt.timedelta(minutes=6))
    with transaction() as session:
        assert welcomes_to_resend(session) == [(sub.id, token.id)]

    rig.worker("welcomer", MAILER_WELCOME_MAIL="true")
    rig.beat()  # sweeps every second (SENDING_ENV)
    [welcome] = wait_for(lambda: clean.smtp.to(address), what="the welcome, queued by a sweep")
    msg = parse(welcome)
    assert msg["Subject"].startswith("Welcome to the ")
    assert msg["Message-ID"].startswith(f"<welcome.{sub.id}.{token.id}.")
    wait_for(lambda: "welcome_sent" in events(sub.id), what="the welcome recorded")
    # More sweeps run, one a second: none queues or sends it again.
    assert wait_settled(lambda: len(clean.smtp.to(address)), quiet=4.0,
                        what="mails to the reader") == 1
    assert events(sub.id).count("welcome_sent") == 1
    with transaction() as session:
        assert welcomes_to_resend(session) == []


def test_the_sweeper_welcomes_no_reader_of_old_and_none_the_server_refused(
        clean) -> None:
    """Turning the setting on does not mail readers who confirmed before the window; a
    welcome the server refused for good is not queued again; with the setting off the
    sweeper queues no welcome at all."""
    # Confirmed with the setting off, so no task is queued that a worker could run.
    old = make("old.reader@example.org", "confirmed")
    move_back(old.id, RESEND_WINDOW + dt.timedelta(minutes=1))
    refused = make("refused.reader@example.org", "confirmed")
    [token] = tokens(refused.id)
    move_back(refused.id, dt.timedelta(minutes=6))
    with transaction() as session:
        assert welcomes_to_resend(session) == [(refused.id, token.id)]
    # the setting is off: nothing, whatever is lost
    assert requeue_lost_welcomes(signup=with_welcome(False).signup) == 0

    on = with_welcome(True)
    clean.smtp.behaviour.add("refused.reader@example.org", "rcpt", "550 5.1.1 No such user")
    assert send_welcome_mail(refused.id, token.id, settings=on) == MailResult.failed
    with transaction() as session:  # still a lost round by the database alone...
        assert welcomes_to_resend(session) == [(refused.id, token.id)]
    # ...but the refusal holds it for the window
    assert requeue_lost_welcomes(signup=on.signup) == 0
    assert get_redis().ttl(f"{HOLD_PREFIX}{refused.id}:{token.id}") > 86400
    assert clean.smtp.to("old.reader@example.org") == []
