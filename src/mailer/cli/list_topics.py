"""``mailer lists topics|topic-rename|topic-merge|topic-unmerge|topic-hide``: a list's topics.

They join the group of :mod:`mailer.cli.lists`. A topic is named by its id, its category
(as the feed names it) or its label. ``topics`` first finds the articles' new categories
(``mailer.lists.topics.sync``); each change is audited as ``cli:<user>``.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mailer.cli.actor import cli_actor
from mailer.cli.lists import app
from mailer.config import get_settings
from mailer.db import transaction
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import MailingList, Topic

__all__ = ["app"]

err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def _list(session: Any, slug: str) -> MailingList:
    found = lists.by_slug(session, slug.strip().lower())
    if found is None:
        raise _fail(f"there is no list {slug!r} (`mailer lists list` names them)")
    return found


def _topic(session: Any, lst: MailingList, ref: str) -> Topic:
    try:
        return topics.topic_named(session, lst.id, ref)
    except topics.TopicError as exc:
        raise _fail(f"{exc} (`mailer lists topics {lst.slug}` names them)") from exc


def _state(topic: Topic, labels: dict[int, str]) -> str:
    if topic.hidden:
        return "hidden"
    if topic.merged_into is not None:
        return f"part of {labels.get(topic.merged_into, '?')}"
    return "offered"


@app.command("topics")
def list_topics(slug: str, as_json: bool = typer.Option(False, "--json",
                                                         help="JSON, for scripts")) -> None:
    """The topics of list SLUG: each category, the name readers see, offered, merged or hidden."""
    with transaction() as session:
        lst = _list(session, slug)
        topics.sync(session, lst.id, unfiled=get_settings().articles.unfiled_categories)
        rows = topics.all_topics(session, lst.id)
        labels = {t.id: t.label for t in rows}
        found: list[dict[str, Any]] = [
            {"id": t.id, "category": t.category, "label": t.label, "hidden": t.hidden,
             "merged_into": t.merged_into, "state": _state(t, labels)} for t in rows]
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if not found:
        print(f"List {slug} has no topic: its articles have no category but the unfiled ones.")
        return
    table = Table("id", "category", "shown as", "state")
    for row in found:
        table.add_row(str(row["id"]), row["category"], row["label"], row["state"])
    Console().print(table)


@app.command("topic-rename")
def rename(slug: str, topic: str = typer.Argument(..., help="its id, category or label"),
           label: str = typer.Argument(..., help="the name readers see")) -> None:
    """Show a topic of list SLUG under another name."""
    try:
        with transaction() as session:
            found = _topic(session, _list(session, slug), topic)
            topics.rename(session, found, label, by=cli_actor())
            category, shown = found.category, found.label
    except topics.TopicError as exc:
        raise _fail(str(exc)) from exc
    print(f"{category} is shown as {shown!r}.")


@app.command("topic-merge")
def merge(slug: str, topic: str = typer.Argument(..., help="the topic merged away"),
          into: str = typer.Argument(..., help="the topic it becomes part of")) -> None:
    """Count a topic's articles as another's; its readers follow that one."""
    try:
        with transaction() as session:
            lst = _list(session, slug)
            found, target = _topic(session, lst, topic), _topic(session, lst, into)
            merged = topics.merge(session, found, target, by=cli_actor())
            what, where = found.label, merged.label
    except topics.TopicError as exc:
        raise _fail(str(exc)) from exc
    print(f"{what} is part of {where} now.")


@app.command("topic-unmerge")
def unmerge(slug: str, topic: str = typer.Argument(..., help="a merged topic")) -> None:
    """Make a merged topic a topic of its own again."""
    with transaction() as session:
        found = _topic(session, _list(session, slug), topic)
        topics.unmerge(session, found, by=cli_actor())
        what = found.label
    print(f"{what} is a topic of its own again.")


@app.command("topic-hide")
def hide(slug: str, topic: str = typer.Argument(..., help="its id, category or label"),
         show: bool = typer.Option(False, "--show", help="offer it to readers again")) -> None:
    """Offer a topic of list SLUG to nobody (--show: offer it again)."""
    with transaction() as session:
        found = _topic(session, _list(session, slug), topic)
        topics.hide(session, found, not show, by=cli_actor())
        what = found.label
    print(f"{what} is offered to readers again." if show else
          f"{what} is hidden: no reader is offered it, and its articles are in nobody's topics.")
