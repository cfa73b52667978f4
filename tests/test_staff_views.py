"""What staff read, over HTTP against the real web server (and a real worker and SMTP
server where a send is needed): one time format, windows shown with their last day, the
intro's greeting said beside the field, a test copy's unsubscribe link, and a subscriber's
editions with what happened to each."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.subscribers.models import Subscriber
from tests import test_admin
from tests.conftest import wait_for
from tests.support.admin import flash_of
from tests.support.factories import BOUNCES, make_edition
from tests.support.mail import links, parse, parts
from tests.support.subscribers import make
from tests.test_admin import draft_december

editor = test_admin.editor  # the fixture: a logged-in editor

#: "3 March 2026, 09:00 CET": the association's zone, 24 h, the zone named.
TIME = r"\d{1,2} (January|February|March|April|May|June|July|August|September|October" \
       r"|November|December) \d{4}, \d\d:\d\d(:\d\d)? CES?T"


def test_a_window_is_shown_with_the_last_day_it_includes(editor) -> None:
    edition_id = draft_december(editor)  # "up to and including 31 December"
    page = editor.get(f"/admin/editions/{edition_id}").text
    assert "articles published 1 December 2025 – 31 December 2025" in page
    assert 'name="until" value="2025-12-31"' in page
    listing = editor.get("/admin/editions").text
    assert "1 December 2025 – 31 December 2025" in listing
    assert "1 January 2026" not in page + listing and "1 Jan 2026" not in page + listing
    empty = editor.post("/admin/editions", {"since": "2030-02-01", "until": "2030-02-28"})
    said = flash_of(editor.follow(empty).text)
    assert said.startswith("error: No article was published 1 February 2030 – 28 February "
                           "2030, so no edition was drafted.")


def test_times_are_in_the_associations_zone_24_hours_and_named(editor) -> None:
    edition_id = make_edition()
    winter = editor.post(f"/admin/editions/{edition_id}/schedule",
                         {"day": "2099-01-05", "time": "9:00"})
    assert flash_of(editor.follow(winter).text) == \
        "ok: Scheduled: it goes out on 5 January 2099, 09:00 CET."
    page = editor.get(f"/admin/editions/{edition_id}").text
    assert "goes out 5 January 2099, 09:00 CET" in page
    # The form asks for a 24-hour time, not the browser's locale's picker.
    assert 'type="datetime-local"' not in page and 'placeholder="09:00"' in page
    summer = editor.post(f"/admin/editions/{edition_id}/schedule",
                         {"day": "2099-07-05", "time": "21:30"})
    assert flash_of(editor.follow(summer).text).endswith("5 July 2099, 21:30 CEST.")
    for bad in ({"day": "2099-07-05", "time": ""}, {"day": "", "time": "09:00"}):
        refused = editor.post(f"/admin/editions/{edition_id}/schedule", bad)
        assert "Give the day and the time" in flash_of(editor.follow(refused).text)
    nonsense = editor.post(f"/admin/editions/{edition_id}/schedule",
                           {"day": "2099-07-05", "time": "25:00"})
    assert "is not a time" in flash_of(editor.follow(nonsense).text)

    progress = editor.get(f"/admin/editions/{edition_id}/progress.json").json()
    assert re.fullmatch(r"\d\d:\d\d:\d\d CES?T", progress["as_of"]), progress["as_of"]
    for path in ("/admin/audit", f"/admin/editions/{edition_id}", "/admin/ops"):
        text = editor.get(path).text
        assert re.search(TIME, text), path
        # No other form of a time: no ISO timestamps, no AM/PM, no abbreviated months.
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), path
        assert not re.search(r"\d:\d\d\s?(AM|PM)\b", text), path
        assert not re.search(r"\d{1,2} (Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}",
                             text), path


def test_the_intro_field_says_that_a_greeting_comes_before_it(editor) -> None:
    edition_id = make_edition()
    page = editor.get(f"/admin/editions/{edition_id}").text
    hint = re.search(r'<p class="hint" id="intro-greeting">(.*?)</p>', page, re.S)
    assert hint and "“Dear Maria,”" in hint.group(1) and "“Dear reader,”" in hint.group(1)
    assert 'aria-describedby="intro-greeting"' in page
    plain = editor.post(f"/admin/editions/{edition_id}/edit", {
        "subject": "S", "intro": "Here is what happened in December."})
    assert flash_of(editor.follow(plain).text) == "ok: Saved."


def test_a_test_copys_unsubscribe_link_says_it_was_a_test_copy(clean, editor) -> None:
    edition_id = draft_december(editor)
    editor.post(f"/admin/editions/{edition_id}/test", {"to": "tester@example.org"})
    [mail] = wait_for(lambda: [m for m in clean.smtp.messages
                               if "tester@example.org" in m.rcpt_tos], what="the test copy")
    msg = parse(mail)
    text, html = parts(msg)
    header_url = msg["List-Unsubscribe"].strip("<>")
    [link] = {u for u in links(html) if "/unsubscribe/" in u}
    assert link == header_url and link in text
    path = urlsplit(link).path
    page = editor.http.get(path)
    assert page.status_code == 200
    assert "This link came in a test copy" in page.text and "Nobody was unsubscribed" in page.text
    assert "not valid" not in page.text and "cut short" not in page.text
    pressed = editor.http.post(path, data={"List-Unsubscribe": "One-Click"})
    assert pressed.status_code == 200 and "test copy" in pressed.text
    assert editor.http.post(path).status_code == 200  # the page's button, if any
    # A test token is signed: one made up, or of another edition, is not valid.
    forged = re.sub(r"test-\d+", f"test-{edition_id + 1}", path)
    assert editor.http.get(forged).status_code == 404
    assert "not valid" in editor.http.get(forged).text
    assert editor.http.get("/unsubscribe/test-1.AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert editor.http.get("/unsubscribe/test-%C2%B2.AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    with transaction() as session:
        assert session.scalars(select(Subscriber)).all() == []


def test_a_subscribers_page_and_export_list_the_editions_they_were_sent(clean, editor,
                                                                       worker) -> None:
    anna = make("anna@example.org", "confirmed", first_name="Anna")
    make("bert@example.org", "confirmed")
    first = draft_december(editor)
    # The first copy is deferred (and retried only after a minute), the second accepted.
    clean.smtp.behaviour.add("anna@example.org", "rcpt", "452 4.2.2 Mailbox full", times=1)
    editor.post(f"/admin/editions/{first}/send", {"confirm": "yes"})
    wait_for(lambda: editor.get(f"/admin/editions/{first}/progress.json").json()["done"] >= 1,
             timeout=60, what="bert's copy")
    wait_for(lambda: _delivery(first, anna.id).state == "deferred", timeout=60,
             what="anna's deferral")
    second = draft_december(editor)
    editor.post(f"/admin/editions/{second}/edit", {"subject": "CEP Newsletter – the second"})
    editor.post(f"/admin/editions/{second}/send", {"confirm": "yes"})
    wait_for(lambda: _delivery(second, anna.id).state == "sent", timeout=60,
             what="anna's second copy")
    with transaction() as session:
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.soft, source="mx",
                      recipient="anna@example.org", status_code="4.2.2",
                      diagnostic="452 4.2.2 Mailbox full",
                      delivery_id=_delivery(second, anna.id).id, attribution="verp")

    page = editor.get(f"/admin/subscribers/{anna.id}").text
    section = page.split('id="editions-sent"', 1)[1].split("<h2", 1)[0]
    assert section.index("CEP Newsletter – the second") < section.index("CEP Newsletter – December")
    assert ">sent<" in section and ">deferred<" in section
    assert "452 4.2.2 Mailbox full" in section  # the server's answer to the first
    assert "250 " in section  # and its acceptance of the second
    assert "<b>soft</b> 4.2.2" in section

    exported = json.loads(editor.get(f"/admin/subscribers/{anna.id}/export.json").text)
    sent = {e["edition"]: e for e in exported["editions_sent"]}
    assert list(sent) == [second, first]
    assert sent[second]["state"] == "sent" and sent[second]["smtp_code"] == 250
    assert sent[second]["subject"] == "CEP Newsletter – the second"
    assert sent[second]["bounces"] == [{
        "received_at": sent[second]["bounces"][0]["received_at"], "class": "soft",
        "status": "4.2.2", "diagnostic": "452 4.2.2 Mailbox full",
        "action": sent[second]["bounces"][0]["action"]}]
    assert sent[first]["state"] == "deferred" and sent[first]["smtp_code"] == 452
    assert "Mailbox full" in sent[first]["smtp_reply"] and sent[first]["bounces"] == []
    assert sent[first]["sent_at"] is None and sent[second]["sent_at"].startswith("20")
    # `mailer subscribers show`, the same GDPR export on the command line.
    shown = subprocess.run([str(Path(sys.executable).parent / "mailer"), "subscribers", "show",
                            "anna@example.org"], env=clean.env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["editions_sent"] == exported["editions_sent"]


def _delivery(edition_id: int, subscriber_id: int) -> Delivery:
    with transaction() as session:
        row = session.scalars(select(Delivery).where(
            Delivery.edition_id == edition_id, Delivery.subscriber_id == subscriber_id)).one()
        session.expunge(row)
        return row
