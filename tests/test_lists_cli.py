"""``mailer lists create|list|show|edit|archive``: thin over the lists service; refusals
name the reason and change nothing; every change is in the audit log as cli:<user>;
``show`` counts the subscriptions per status."""

from __future__ import annotations

import json

from sqlalchemy import select
from typer.testing import CliRunner

from mailer.audit import AuditEntry
from mailer.cli import app
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists.models import MailingList, Subscription
from mailer.subscribers.models import Subscriber
from mailer.tokens import address_hash, random_id

runner = CliRunner()


def mailer(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def people(n: int) -> list[int]:
    """``n`` subscribers on no list yet; their ids."""
    with transaction() as session:
        rows = [Subscriber(public_id=random_id(), email=f"p{i}@example.net",
                           email_key=f"p{i}@example.net",
                           address_hash=address_hash(f"p{i}@example.net"), source="test")
                for i in range(n)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _list(slug: str) -> MailingList:
    with transaction() as session:
        found = lists.by_slug(session, slug)
        assert found is not None
        session.expunge(found)
        return found


def test_create_show_edit_archive(clean) -> None:
    made = mailer("lists", "create", "events", "--name", "Event announcements",
                  "--list-id", "events.cep-probation.org", "--description", "Our events",
                  "--from-address", "CEP events <events@cep-probation.org>",
                  "--public", "yes", "--no-topics", "whole", "--click-tracking", "no")
    assert made.exit_code == 0, made.output
    assert "/subscribe/events" in made.output
    events = _list("events")
    assert (events.name, events.list_id, events.description) == (
        "Event announcements", "events.cep-probation.org", "Our events")
    assert events.from_address == "CEP events <events@cep-probation.org>"
    assert events.public and events.no_topics == "whole" and events.click_tracking is False
    assert events.reply_to is None and events.consent_text is None  # the settings'

    private = mailer("lists", "create", "experts", "--name", "Expert group", "--list-id",
                     "experts.cep-probation.org", "--public", "no")
    assert private.exit_code == 0 and "private" in private.output

    # Two confirmed and one pending on events, one unsubscribed on experts.
    ids = people(4)
    with transaction() as session:
        experts = lists.by_slug(session, "experts")
        assert experts is not None
        for sid, status in zip(ids[:3], ("confirmed", "confirmed", "pending"), strict=True):
            session.add(Subscription(subscriber_id=sid, list_id=events.id, status=status))
        session.add(Subscription(subscriber_id=ids[3], list_id=experts.id,
                                 status="unsubscribed"))

    shown = mailer("lists", "show", "events", "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["subscriptions"] == {"pending": 1, "confirmed": 2, "unsubscribed": 0}
    assert data["from_address"] == "CEP events <events@cep-probation.org>"
    assert data["reply_to"] is None and data["public"] is True
    plain = mailer("lists", "show", "events")
    assert "confirmed: 2" in plain.output and "reply_to: (the settings')" in plain.output

    listed = mailer("lists", "list", "--json")
    by_slug = {row["slug"]: row for row in json.loads(listed.stdout)}
    assert by_slug["experts"]["subscriptions"]["unsubscribed"] == 1
    assert by_slug["experts"]["public"] is False
    assert "events.cep-probation.org" in mailer("lists", "list").output

    edited = mailer("lists", "edit", "events", "--name", "Events", "--from-address", "",
                    "--schedule-cron", "0 9 * * 1", "--click-tracking", "default")
    assert edited.exit_code == 0, edited.output
    assert "changed click_tracking, from_address, name, schedule_cron" in edited.output
    events = _list("events")
    assert events.name == "Events" and events.from_address is None  # back to the settings'
    assert events.schedule_cron == "0 9 * * 1" and events.click_tracking is None
    same = mailer("lists", "edit", "events", "--name", "Events")
    assert same.exit_code == 0 and "nothing changed" in same.output

    archived = mailer("lists", "archive", "experts", "--yes")
    assert archived.exit_code == 0 and "archived" in archived.output
    assert _list("experts").archived_at is not None
    assert "experts" not in {r["slug"] for r in json.loads(
        mailer("lists", "list", "--json").stdout)}
    assert "experts" in {r["slug"] for r in json.loads(
        mailer("lists", "list", "--archived", "--json").stdout)}
    again = mailer("lists", "archive", "experts", "--yes")
    assert again.exit_code == 0 and "archived already" in again.output

    with transaction() as session:
        audit = [(a.action, a.target, a.actor) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("list.%"))
            .order_by(AuditEntry.id))]
    assert [a[0] for a in audit] == ["list.create", "list.create", "list.edit",
                                     "list.archive"]
    assert all(actor.startswith("cli") for _, _, actor in audit)
    assert audit[2][1] == f"list:{events.id}"


def test_refusals_name_the_reason_and_change_nothing(clean) -> None:
    assert mailer("lists", "create", "news", "--name", "News", "--list-id",
                  "news.example.org").exit_code == 0
    cases = [
        (("create", "News", "--name", "x", "--list-id", "n2.example.org"), "there is a list"),
        (("create", "Bad Slug", "--name", "x", "--list-id", "b.example.org"), "the slug is"),
        (("create", "embed", "--name", "x", "--list-id", "e.example.org"), "taken by a page"),
        (("create", "other", "--name", "x", "--list-id", "news.example.org"),
         "has that List-Id already"),
        (("create", "other", "--name", "x", "--list-id", "nodots"), "RFC 2919"),
        (("create", "other", "--name", "x", "--list-id", "o.example.org", "--from-address",
          "not an address"), "from address"),
        (("edit", "news", "--schedule-cron", "every day"), "five crontab fields"),
        (("edit", "news", "--no-topics", "some"), "no_topics is"),
        (("edit", "nosuch", "--name", "x"), "there is no list 'nosuch'"),
        (("show", "nosuch"), "there is no list"),
        (("archive", "nosuch", "--yes"), "there is no list"),
    ]
    for args, words in cases:
        answer = mailer("lists", *args)
        assert answer.exit_code == 1, (args, answer.output)
        assert words in answer.output, (args, answer.output)
    nothing = mailer("lists", "edit", "news")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    flag = mailer("lists", "edit", "news", "--public", "maybe")
    assert flag.exit_code == 2 and "yes or no" in flag.output
    with transaction() as session:
        assert [lst.slug for lst in lists.all_lists(session, archived=True)
                if lst.slug != "newsletter"] == ["news"]
        assert lists.by_slug(session, "news").schedule_cron is None  # type: ignore[union-attr]
