"""The public forms of the lists: ``/subscribe/<slug>`` (one list; 404 for an unknown,
archived or private one), the combined ``/subscribe`` with a box per public list, and the
embed snippet per list. Double opt-in per list through a real worker and SMTP server."""

from __future__ import annotations

import httpx
import lxml.html
from sqlalchemy import func, select

from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber
from tests.support.subscribers import (
    confirmation_link,
    path,
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)

FORM = {"first_name": "Anna", "last_name": "Schmidt", "consent": "yes"}


def make_lists() -> dict[str, int]:
    """alpha and beta public, gamma private, delta archived: slug → id."""
    with transaction() as session:
        made = {
            "alpha": lists.create(session, slug="alpha", name="Alpha news",
                                  list_id="alpha.example.org", description="All about alpha"),
            "beta": lists.create(session, slug="beta", name="Beta events",
                                 list_id="beta.example.org",
                                 consent_text="Yes, send me the beta events mail."),
            "gamma": lists.create(session, slug="gamma", name="Gamma experts",
                                  list_id="gamma.example.org", public=False),
            "delta": lists.create(session, slug="delta", name="Delta old",
                                  list_id="delta.example.org"),
        }
        lists.archive(session, made["delta"])
        return {slug: lst.id for slug, lst in made.items()}


def statuses(email: str) -> dict[str, str]:
    """The person's subscriptions: list slug → status."""
    found = subscriber(email)
    if found is None:
        return {}
    with transaction() as session:
        return {lst.slug: held.status for held, lst in session.execute(
            select(Subscription, MailingList)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscription.subscriber_id == found.id))}


def stored() -> tuple[int, int, int, int]:
    with transaction() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (Subscriber, Subscription, ConsentEvent, ConfirmationToken))


def test_sign_up_to_one_list_confirms_that_list_only(clean, web, worker) -> None:
    ids = make_lists()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    form = client.get("/subscribe/beta")
    assert form.status_code == 200
    doc = lxml.html.fromstring(form.text)
    assert doc.xpath("//form/@action") == ["/subscribe/beta"]
    assert "Beta events" in doc.xpath("string(//h1)")
    assert "Yes, send me the beta events mail." in form.text  # the list's own consent
    assert not doc.xpath("//input[starts-with(@name, 'list-')]")  # no boxes: one list

    answer = client.post("/subscribe/beta", data={**FORM, "email": "anna@example.org"})
    assert answer.status_code == 200 and "check your inbox" in answer.text
    assert statuses("anna@example.org") == {"beta": "pending"}
    with transaction() as session:
        sub = session.scalars(select(Subscriber)).one()
        [event] = session.scalars(select(ConsentEvent).where(
            ConsentEvent.kind == "subscribed")).all()
        assert event.list_id == ids["beta"]
        assert event.consent_text == "Yes, send me the beta events mail."
        [token] = session.scalars(select(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == sub.id)).all()
        assert token.lists == [ids["beta"]]

    link = confirmation_link(clean.smtp, "anna@example.org")
    assert client.get(path(link)).status_code == 200
    assert statuses("anna@example.org") == {"beta": "pending"}  # a GET confirms nothing
    done = client.post(path(link))
    assert done.status_code == 200
    assert statuses("anna@example.org") == {"beta": "confirmed"}  # and nothing else
    with transaction() as session:
        assert lists.subscription(session, sub.id, ids["alpha"]) is None
        assert lists.subscription_counts(session) == {
            ids["beta"]: {"pending": 0, "confirmed": 1, "unsubscribed": 0}}


def test_unknown_archived_and_private_lists_have_no_form(clean, web) -> None:
    make_lists()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    before = stored()
    assert client.get("/subscribe/%00").status_code == 400  # refused before any route
    for slug in ("nosuch", "gamma", "delta", "GAMMA", "a" * 80, "al pha", "-x"):
        for url in (f"/subscribe/{slug}", f"/subscribe/{slug}/embed"):
            page = client.get(url)
            assert page.status_code == 404, url
            assert "There is no such list" in page.text, url
        posted = client.post(f"/subscribe/{slug}", data={**FORM, "email": "x@example.org"})
        assert posted.status_code == 404, slug
    assert stored() == before
    # A slug in capitals is the same list.
    assert client.get("/subscribe/ALPHA").status_code == 200


def test_the_combined_form_offers_each_public_list(clean, web, worker) -> None:
    ids = make_lists()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    doc = lxml.html.fromstring(client.get("/subscribe").text)
    boxes = doc.xpath("//input[@type='checkbox'][starts-with(@name, 'list-')]/@name")
    # The first list, then ours; neither the private nor the archived one.
    assert boxes == ["list-newsletter", "list-alpha", "list-beta"]
    assert "All about alpha" in doc.xpath("string(//label[@for='list-alpha'])")

    # None ticked: said beside the boxes, nothing stored.
    before = stored()
    none = client.post("/subscribe", data={**FORM, "email": "bob@example.org",
                                           "lists-offered": "yes"})
    assert none.status_code == 422 and "tick at least one list" in none.text
    assert stored() == before
    # A forged box for the private list counts for nothing.
    forged = client.post("/subscribe", data={**FORM, "email": "bob@example.org",
                                             "lists-offered": "yes", "list-gamma": "yes"})
    assert forged.status_code == 422
    assert stored() == before
    # The answer keeps what was typed and ticked.
    kept = client.post("/subscribe", data={**FORM, "email": "not an address",
                                           "lists-offered": "yes", "list-beta": "yes"})
    assert kept.status_code == 422
    again = lxml.html.fromstring(kept.text)
    assert again.xpath("//input[@name='list-beta']/@checked")
    assert not again.xpath("//input[@name='list-alpha']/@checked")

    both = client.post("/subscribe", data={**FORM, "email": "carla@example.org",
                                           "lists-offered": "yes", "list-alpha": "yes",
                                           "list-beta": "yes", "list-gamma": "yes"})
    assert both.status_code == 200
    assert statuses("carla@example.org") == {"alpha": "pending", "beta": "pending"}
    sub = subscriber("carla@example.org")
    assert sub is not None
    with transaction() as session:
        [token] = session.scalars(select(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == sub.id)).all()
        assert sorted(token.lists) == sorted([ids["alpha"], ids["beta"]])  # one round
    client.post(path(confirmation_link(clean.smtp, "carla@example.org")))
    assert statuses("carla@example.org") == {"alpha": "confirmed", "beta": "confirmed"}


def test_a_form_that_names_no_list_signs_up_to_the_default_list(clean, web) -> None:
    """The sign-up form and embed snippets of before (no boxes) keep working."""
    make_lists()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    answer = client.post("/subscribe", data={**FORM, "email": "dora@example.org",
                                             "source": "website-embed"})
    assert answer.status_code == 200
    with transaction() as session:
        default = lists.default_list(session).slug
    assert statuses("dora@example.org") == {default: "pending"}


def test_a_list_form_answers_the_same_whatever_the_address(clean, web) -> None:
    """New, pending on the list, on another list: the same status and bytes."""
    make_lists()
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    client.post("/subscribe/beta", data={**FORM, "email": "pending@example.org"})
    client.post("/subscribe/alpha", data={**FORM, "email": "other@example.org"})
    answers = [client.post("/subscribe/beta", data={**FORM, "email": a})
               for a in ("new@example.org", "pending@example.org", "other@example.org")]
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert statuses("other@example.org") == {"alpha": "pending", "beta": "pending"}
    # The honeypot: a bot is thanked and nothing is stored.
    before = stored()
    bot = client.post("/subscribe/beta", data={**FORM, "email": "bot@example.org",
                                               "website": "http://spam.example"})
    assert bot.content == answers[0].content and stored() == before


def test_the_embed_snippet_of_a_list(clean, web) -> None:
    make_lists()
    page = httpx.get(f"{web.url}/subscribe/beta/embed")
    assert page.status_code == 200
    code = lxml.html.fromstring(page.text).xpath("string(//pre/code)")
    snippet = lxml.html.fromstring(code)
    assert snippet.xpath("//form/@action") == [f"{web.url}/subscribe/beta"]
    assert "Yes, send me the beta events mail." in code
    assert not snippet.xpath("//input[starts-with(@name, 'list-')]")
    # The general snippet has the combined form's boxes, public lists only.
    general = lxml.html.fromstring(lxml.html.fromstring(
        httpx.get(f"{web.url}/subscribe/embed").text).xpath("string(//pre/code)"))
    assert general.xpath("//form/@action") == [f"{web.url}/subscribe"]
    names = general.xpath("//input[starts-with(@name, 'list-')]/@name")
    assert "list-alpha" in names and "list-beta" in names and "list-gamma" not in names
    assert general.xpath("//input[@name='lists-offered']/@value") == ["yes"]


def test_a_private_default_list_is_never_signed_up_to_from_a_public_form(clean, web,
                                                                        worker) -> None:
    """The first list made private: a form without boxes goes to the first public list;
    with no public list at all, the form says so and stores nothing."""
    with transaction() as session:
        first = lists.default_list(session)
        lists.edit(session, first, public=False)
        lists.create(session, slug="open", name="Open", list_id="open.example.org")
    client = httpx.Client(base_url=web.url, follow_redirects=False)
    assert client.post("/subscribe", data={**FORM, "email": "eve@example.org"}
                       ).status_code == 200
    assert statuses("eve@example.org") == {"open": "pending"}
    confirmation_link(clean.smtp, "eve@example.org")  # its mail is out: nothing more to come
    assert client.get(f"/subscribe/{first.slug}").status_code == 404
    with transaction() as session:
        lists.archive(session, lists.by_slug(session, "open"))  # type: ignore[arg-type]
    before = stored()
    nothing = client.post("/subscribe", data={**FORM, "email": "fay@example.org"})
    assert nothing.status_code == 422 and "no list to subscribe to" in nothing.text
    assert stored() == before
