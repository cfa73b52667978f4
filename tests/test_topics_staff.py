"""Staff manage a list's topics: the admin page (/admin/lists/<id>/topics, editors only)
and ``mailer lists topics|topic-rename|topic-merge|topic-unmerge|topic-hide``; each change
audited, and what readers are offered follows."""

from __future__ import annotations

import json

from sqlalchemy import select
from typer.testing import CliRunner

from mailer.audit import AuditEntry
from mailer.cli import app
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from tests.support.admin import Admin, flash_of, make_staff
from tests.support.factories import make_articles

runner = CliRunner()


def mailer(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def _offered(list_id: int) -> dict[str, frozenset[str]]:
    with transaction() as s:
        return {v.label: v.categories for v in topics.catalogue(s, list_id)}


def _audit() -> list[tuple[str, str]]:
    with transaction() as s:
        return [(e.action, e.actor) for e in s.scalars(
            select(AuditEntry).where(AuditEntry.action.like("topic.%")).order_by(AuditEntry.id))]


def _first_list() -> tuple[int, str]:
    with transaction() as s:
        lst = lists.default_list(s)
        return lst.id, lst.slug


def test_the_admin_page_renames_merges_hides(clean, web) -> None:
    make_articles(4)  # News, CEP Events, Criminal Justice, Mental Health
    list_id, _ = _first_list()
    make_staff("ed.topics@example.org", "editor")
    editor = Admin(web.url)
    editor.login("ed.topics@example.org")
    here = f"/admin/lists/{list_id}/topics"
    page = editor.get(here)  # finds the articles' categories
    assert page.status_code == 200 and "Criminal Justice" in page.text
    with transaction() as s:
        ids = {t.category: t.id for t in topics.all_topics(s, list_id)}
    assert set(ids) == {"News", "CEP Events", "Criminal Justice", "Mental Health"}

    answer = editor.post(f"{here}/{ids['Mental Health']}/rename", {"label": "Health & care"})
    assert "Health & care" in flash_of(editor.follow(answer).text)
    answer = editor.post(f"{here}/{ids['Criminal Justice']}/merge",
                         {"into": str(ids["Mental Health"])})
    assert "part of Health & care" in flash_of(editor.follow(answer).text)
    answer = editor.post(f"{here}/{ids['News']}/hide")
    assert "hidden" in flash_of(editor.follow(answer).text)
    assert _offered(list_id) == {
        "CEP Events": {"CEP Events"},
        "Health & care": {"Mental Health", "Criminal Justice"}}
    assert _audit() == [("topic.rename", "ed.topics@example.org"),
                        ("topic.merge", "ed.topics@example.org"),
                        ("topic.hide", "ed.topics@example.org")]

    # Refusals come back as a message on the page, never a 5xx, and change nothing.
    for path, data in ((f"{here}/{ids['CEP Events']}/rename", {"label": "  "}),
                       (f"{here}/{ids['CEP Events']}/merge", {"into": str(ids["CEP Events"])}),
                       (f"{here}/{ids['CEP Events']}/merge", {"into": "x"}),
                       (f"{here}/{ids['CEP Events']}/explode", {})):
        answer = editor.post(path, data)
        assert answer.status_code == 303, path
        assert flash_of(editor.follow(answer).text).startswith("error:"), path
    for path in (f"/admin/lists/{list_id + 99}/topics/{ids['CEP Events']}/hide",
                 f"/admin/lists/{list_id + 99}/topics"):
        answer = editor.post(path) if path.endswith("hide") else editor.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/lists"), path
    assert len(_audit()) == 3
    page = editor.get(here).text
    assert "part of Health &amp; care" in page and "hidden" in page

    answer = editor.post(f"{here}/{ids['News']}/show")
    answer = editor.post(f"{here}/{ids['Criminal Justice']}/unmerge")
    assert set(_offered(list_id)) == {"News", "CEP Events", "Health & care", "Criminal Justice"}


def test_the_cli_lists_and_changes_topics(clean) -> None:
    make_articles(4)
    list_id, slug = _first_list()
    listed = mailer("lists", "topics", slug, "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert {r["category"] for r in rows} == {"News", "CEP Events", "Criminal Justice",
                                              "Mental Health"}
    assert {r["state"] for r in rows} == {"offered"}

    assert mailer("lists", "topic-rename", slug, "Mental Health", "Wellbeing").exit_code == 0
    merged = mailer("lists", "topic-merge", slug, "Criminal Justice", "wellbeing")
    assert merged.exit_code == 0 and "part of Wellbeing" in merged.output
    assert mailer("lists", "topic-hide", slug, "News").exit_code == 0
    assert _offered(list_id) == {"CEP Events": {"CEP Events"},
                                 "Wellbeing": {"Mental Health", "Criminal Justice"}}
    table = mailer("lists", "topics", slug)
    assert "part of Wellbeing" in table.output and "hidden" in table.output
    assert [actor.startswith("cli:") for _, actor in _audit()] == [True, True, True]

    assert mailer("lists", "topic-hide", slug, "News", "--show").exit_code == 0
    assert mailer("lists", "topic-unmerge", slug, "Criminal Justice").exit_code == 0
    assert len(_offered(list_id)) == 4

    unknown = mailer("lists", "topic-hide", slug, "Sports")
    assert unknown.exit_code == 1 and "no topic 'Sports'" in unknown.output
    assert mailer("lists", "topics", "no-such-list").exit_code == 1
    itself = mailer("lists", "topic-merge", slug, "News", "News")
    assert itself.exit_code == 1 and "itself" in itself.output
