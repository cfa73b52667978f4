"""Every page of the admin on a phone (375 px wide, in Debian's Chromium): nothing runs off
the screen. The pages are read from the admin's routers, so a page added later is visited
too (or the test says how to visit it); each is visited logged in, with data in every
table: a draft, a sent and a scheduled edition, subscribers with deliveries and bounces,
suppressions, articles and the audit log. A screenshot of each lands in test-artifacts/."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from mailer.bounces.actions import record_bounce
from mailer.bounces.models import BounceClass
from mailer.config import get_settings
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.subscribers.addresses import key_hash
from mailer.suppression.service import suppress
from mailer.web.admin import MODULES
from tests.conftest import wait_for
from tests.support.admin import Admin, make_staff
from tests.support.factories import BOUNCES, FIRST_LIST, make_subscribers
from tests.support.subscribers import make
from tests.test_admin import EDITOR, draft_december, import_cep_feed

pytestmark = pytest.mark.browser

WIDTH = 375
PHONE = {"viewport": {"width": WIDTH, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
LONG_ADDRESS = "maria.van.der.westhuizen-oosterbroek@probation-service.example.org"
LONG_SUBJECT = ("CEP Newsletter – December 2025: probation across Europe, the CoPPer "
                "conference and a new partner")
#: GET routes that are not pages: downloads, JSON, the script, the mail's own HTML (the
#: preview page frames it; test_admin_browser checks it at phone width in its frame).
NOT_PAGES = re.compile(r"(\.json|\.csv|\.js|/preview\.html)$")


def admin_paths() -> list[str]:
    """Every GET route of the admin, from its routers."""
    return [route.path for module in MODULES for route in module.router.routes
            if "GET" in getattr(route, "methods", ()) and not NOT_PAGES.search(route.path)]


def fill(path: str, ids: dict[str, dict[str, int]]) -> list[tuple[str, str]]:
    """(path, name for its screenshot) with the parameter filled in, once per row made."""
    names = re.findall(r"{(\w+)}", path)
    if not names:
        return [(path, path)]
    assert len(names) == 1 and names[0] in ids, (
        f"{path}: no data to visit it with; add its parameter to the ids in this test")
    slot = f"{{{names[0]}}}"
    return [(path.replace(slot, str(value)), path.replace(slot, label))
            for label, value in ids[names[0]].items()]


def make_data(admin: Admin) -> dict[str, dict[str, int]]:
    """A desk in use: editions in three states, readers with history, bounces, suppressions."""
    import_cep_feed()
    readers = make_subscribers(4)
    person = make(LONG_ADDRESS, "confirmed", first_name="Maria")
    draft = draft_december(admin)
    admin.post(f"/admin/editions/{draft}/edit", {
        "subject": LONG_SUBJECT, "preheader": "CoPPer, stress and morale, and a new partner",
        "intro": "here is what happened in probation this December.\n\nhttps://www.cep-"
                 "probation.org/a-very-long-address-without-any-break-in-it-at-all/"})
    scheduled = draft_december(admin)
    admin.post(f"/admin/editions/{scheduled}/schedule", {"day": "2099-01-05", "time": "09:00"})
    sent = draft_december(admin)
    admin.post(f"/admin/editions/{sent}/edit", {"subject": LONG_SUBJECT})
    started = admin.post(f"/admin/editions/{sent}/send", {"audience": "5", "confirm": "yes"})
    assert started.status_code == 303
    wait_for(lambda: admin.get(f"/admin/editions/{sent}/progress.json").json()["state"]
             == "sent", timeout=90, what="the send")
    with transaction() as session:
        delivery = session.scalars(select(Delivery).where(
            Delivery.edition_id == sent, Delivery.subscriber_id == person.id)).one()
        delivery.smtp_reply = ("2.0.0 Ok: queued as 4F8Kq72LxYz1 " + "x" * 80)
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.soft, source="mx",
                      recipient=LONG_ADDRESS, status_code="4.2.2",
                      diagnostic="452 4.2.2 <" + LONG_ADDRESS + ">: Mailbox full, quota "
                                 "exceeded; try again later (mx.probation-service.example.org)",
                      delivery_id=delivery.id, attribution="verp",
                      attribution_note="VERP token d" + str(delivery.id))
        # One that came by mail without our signed token: the page offers to confirm it.
        record_bounce(session, bounces=BOUNCES, bounce_class=BounceClass.hard, source="mx",
                      recipient=LONG_ADDRESS, status_code="5.1.1",
                      diagnostic="550 5.1.1 The email account that you tried to reach does "
                                 "not exist; please try double-checking the address",
                      unverified="no-token", claimed_subscriber_id=person.id,
                      fingerprint="phone-test")
        suppress(session, key_hash(readers[0]), reason="manual",
                 evidence="asked by phone, ticket 4711 — " + "a long note " * 8)
    hook = _webhook_with_a_log()
    with transaction() as session:
        from mailer.lists import service as lists

        long_list = lists.create(
            session, slug="expert-group-on-radicalisation-and-violent-extremism",
            name="Expert group on radicalisation, violent extremism and probation practice",
            list_id="expert-group-on-radicalisation.lists.cep-probation.org",
            from_address="CEP expert group <expert-group-radicalisation@cep-probation.org>",
            description="For the members of the expert group only " * 3, public=False).id
    return {"edition_id": {"draft": draft, "scheduled": scheduled, "sent": sent},
            "subscriber_id": {"maria": person.id}, "endpoint_id": {"webhook": hook},
            "list_id": {"first": FIRST_LIST, "long": long_list}}


def _webhook_with_a_log() -> int:
    """An endpoint with a long URL, one delivery and a failed attempt in its log."""
    from mailer.webhooks import endpoints
    from mailer.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookMessage

    with transaction() as session:
        endpoint = endpoints.add(
            session, url="http://127.0.0.1:9/hooks/newsletter/" + "subscribers-" * 6,
            events=["subscriber.confirmed", "subscriber.unsubscribed", "edition.sent"],
            by="test", settings=get_settings().webhooks, description="the members' CRM")
        event = WebhookMessage(message_id="msg_" + "x" * 24, kind="subscriber.confirmed",
                               data={})
        session.add(event)
        session.flush()
        delivery = WebhookDelivery(event_id=event.id, endpoint_id=endpoint.id, attempts=1,
                                   last_status_code=500, last_error="HTTP 500: " + "e" * 100)
        session.add(delivery)
        session.flush()
        session.add(WebhookAttempt(delivery_id=delivery.id, endpoint_id=endpoint.id,
                                   outcome="failed", status_code=500, latency_ms=12,
                                   error="HTTP 500: Internal Server Error " + "e" * 150))
        return endpoint.id


def overflow(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The elements whose right edge is beyond the screen (for the failure message)."""
    return page.evaluate("""(width) => [...document.querySelectorAll('body *')]
        .filter(el => el.getBoundingClientRect().right > width + 0.5
                && !el.closest('.scroll') && getComputedStyle(el).position !== 'absolute')
        .slice(0, 8).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                         + (el.className ? '.' + String(el.className).split(' ')[0] : '')
                         + ' ' + Math.round(el.getBoundingClientRect().right) + 'px')""", WIDTH)


def test_every_admin_page_fits_a_phone(clean, web, worker, browser, artifacts) -> None:
    from mailer.config import OpsSettings
    from mailer.ops.workers import alive

    wait_for(lambda: alive(ops=OpsSettings()), timeout=40, what="the worker's heartbeat")
    make_staff(EDITOR, "editor")
    admin = Admin(web.url)
    assert admin.login(EDITOR).status_code == 303
    ids = make_data(admin)
    pages = [p for template in admin_paths() for p in fill(template, ids)]
    assert "/admin/articles" in dict(pages) and len(pages) >= 20

    phone = browser.new_context(**PHONE)
    phone.add_cookies([{"name": name, "value": value, "url": web.url}  # the session, no flash
                       for name, value in admin.http.cookies.items() if "flash" not in name])
    anonymous = browser.new_context(**PHONE)
    page, stranger = phone.new_page(), anonymous.new_page()
    too_wide: dict[str, object] = {}
    for path, label in pages:
        # The login page is seen before logging in; every other page logged in.
        tab = stranger if path == "/admin/login" else page
        answer = tab.goto(f"{web.url}{path}")
        assert answer is not None and answer.status < 500, path
        assert tab.url.startswith(f"{web.url}/admin"), (path, tab.url)
        if path != "/admin/login":
            assert "/admin/login" not in tab.url, f"{path}: not logged in"
        width = tab.evaluate("document.documentElement.scrollWidth")
        name = re.sub(r"[^a-z0-9]+", "-", label.removeprefix("/admin").lower()).strip("-")
        tab.screenshot(path=str(artifacts / f"admin-375-{name or 'home'}-{clean.backend}.png"),
                       full_page=True)
        if width > WIDTH:
            too_wide[path] = (width, overflow(tab))
    phone.close()
    anonymous.close()
    admin.close()
    assert too_wide == {}, f"wider than {WIDTH} px: {too_wide}"
