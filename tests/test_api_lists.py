"""``/api/v1/lists`` (read-only, scope ``lists``), a subscriber's subscriptions in the
subscriber resource, and the sign-up and the import naming lists, over real HTTP."""

from __future__ import annotations

from sqlalchemy import select

from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription
from tests.support.subscribers import (
    settle_confirmation_tasks,  # noqa: F401
    subscriber,
)
from tests.test_api import api, is_problem, token


def make_lists() -> dict[str, int]:
    with transaction() as session:
        made = [lists.create(session, slug="alpha", name="Alpha", list_id="alpha.example.org",
                             description="About alpha"),
                lists.create(session, slug="beta", name="Beta", list_id="beta.example.org"),
                lists.create(session, slug="gamma", name="Gamma", list_id="gamma.example.org",
                             public=False),
                lists.create(session, slug="delta", name="Delta", list_id="delta.example.org")]
        lists.archive(session, made[3])
        return {lst.slug: lst.id for lst in made}


def statuses(email: str) -> dict[str, str]:
    found = subscriber(email)
    assert found is not None
    with transaction() as session:
        return {slug: status for slug, status in session.execute(
            select(MailingList.slug, Subscription.status)
            .join(Subscription, Subscription.list_id == MailingList.id)
            .where(Subscription.subscriber_id == found.id))}


def test_lists_are_read_with_their_counts(clean, web) -> None:
    ids = make_lists()
    with transaction() as session:
        session.add(Subscription(subscriber_id=_person("p@example.org"), list_id=ids["beta"],
                                 status="confirmed"))
    client = api(web, token("reader", "lists"))
    listed = client.get("/lists")
    assert listed.status_code == 200, listed.text
    by_slug = {item["slug"]: item for item in listed.json()["items"]}
    assert {"alpha", "beta", "gamma"} <= set(by_slug) and "delta" not in by_slug
    assert by_slug["beta"]["subscriptions"] == {"pending": 0, "confirmed": 1,
                                                "unsubscribed": 0}
    assert by_slug["alpha"]["description"] == "About alpha"
    assert by_slug["gamma"]["public"] is False and by_slug["alpha"]["public"] is True
    assert sum(item["default"] for item in by_slug.values()) == 1
    every = client.get("/lists", params={"archived": "true"}).json()["items"]
    assert "delta" in {item["slug"] for item in every}

    beta = client.get("/lists/beta")
    assert beta.status_code == 200 and beta.json()["list_id"] == "beta.example.org"
    assert client.get("/lists/delta").json()["archived_at"] is not None
    is_problem(client.get("/lists/nosuch"), 404)
    is_problem(client.get("/lists/" + "a" * 61), 422)
    is_problem(client.get("/lists", params={"archived": "perhaps"}), 422)
    is_problem(api(web, token("other", "subscribers:read")).get("/lists"), 403)
    is_problem(api(web).get("/lists"), 401)
    assert api(web, token("writer", "subscribers:write")).post("/lists").status_code == 405


def _person(email: str) -> int:
    from mailer.subscribers.models import Subscriber
    from mailer.tokens import address_hash, random_id

    with transaction() as session:
        row = Subscriber(public_id=random_id(), email=email, email_key=email,
                         address_hash=address_hash(email), source="test")
        session.add(row)
        session.flush()
        return row.id


def test_sign_up_and_import_name_lists(clean, web) -> None:
    make_lists()
    client = api(web, token("crm", "subscribers:write", "subscribers:import",
                            "subscribers:read"))
    asked = client.post("/subscribers", json={"email": "ann@example.org", "consent": True,
                                              "lists": ["beta", "gamma"]})
    assert asked.status_code == 202, asked.text
    assert statuses("ann@example.org") == {"beta": "pending", "gamma": "pending"}
    for wrong in (["nosuch"], ["delta"]):  # unknown, archived
        refused = client.post("/subscribers", json={"email": "bob@example.org",
                                                    "consent": True, "lists": wrong})
        assert "no open list" in is_problem(refused, 404)["detail"]
    assert subscriber("bob@example.org") is None
    is_problem(client.post("/subscribers", json={"email": "bob@example.org", "consent": True,
                                                 "lists": ["Not A Slug"]}), 422)

    imported = client.post("/subscribers/import", json={
        "source": "members 2025", "list": "alpha",
        "items": [{"email": "ann@example.org"}, {"email": "cem@example.org"}]})
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == 2
    assert statuses("ann@example.org") == {"alpha": "confirmed", "beta": "pending",
                                           "gamma": "pending"}
    assert statuses("cem@example.org") == {"alpha": "confirmed"}
    is_problem(client.post("/subscribers/import", json={
        "source": "x", "list": "nosuch", "items": [{"email": "d@example.org"}]}), 404)

    found = subscriber("ann@example.org")
    assert found is not None
    one = client.get(f"/subscribers/{found.public_id}").json()
    assert {s["list"]: s["status"] for s in one["subscriptions"]} == {
        "alpha": "confirmed", "beta": "pending", "gamma": "pending"}
    assert all(s["topics"] is None for s in one["subscriptions"])  # all topics
