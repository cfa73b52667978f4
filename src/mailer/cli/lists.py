"""``mailer lists create|list|show|edit|archive``: the lists readers subscribe to.

Thin over :mod:`mailer.lists.service` (which checks every value); each change is in the
audit log as ``cli:<user>`` (:mod:`mailer.lists.changes`). A field
left empty (``--from-address ""``) goes back to the settings' value. The topic commands
of a list join this group from their own module.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_time
from mailer.db import transaction
from mailer.lists import changes
from mailer.lists import service as lists
from mailer.lists.models import MailingList, SubscriptionStatus

app = typer.Typer(no_args_is_help=True, help="Mailing lists: their own From, consent, rhythm.")
err = Console(stderr=True, soft_wrap=True)

STATUSES = [s.value for s in SubscriptionStatus]
#: The fields ``show`` prints and ``--json`` gives, in this order.
FIELDS = ("slug", "name", "description", "list_id", "from_address", "reply_to",
          "consent_text", "consent_version", "public", "archive", "schedule_cron",
          "click_tracking", "no_topics", "position")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def _open(session: Any, slug: str) -> MailingList:
    found = lists.by_slug(session, slug.strip().lower())
    if found is None:
        raise _fail(f"there is no list {slug!r} (`mailer lists list` names them)")
    return found


def _tristate(value: str | None, what: str) -> bool | None:
    """``yes``/``no`` for a flag, or ``default`` (NULL: follow the settings)."""
    if value is None:
        return None
    answer = {"yes": True, "true": True, "on": True, "no": False, "false": False,
              "off": False}.get(value.strip().lower())
    if answer is None:
        raise _fail(f"{what} is yes or no, not {value!r}", 2)
    return answer


def _fields(**options: Any) -> dict[str, Any]:
    """The options given (None: not given) as the service's fields."""
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in ("public", "archive"):
            value = _tristate(value, f"--{name}")
        elif name == "click_tracking":
            value = None if value.strip().lower() in ("", "default") \
                else _tristate(value, "--click-tracking")
        fields[name] = value
    return fields


DESCRIPTION = typer.Option(None, "--description", help="a sentence for the sign-up form")
FROM = typer.Option(None, "--from-address",
                    help='its own From ("Name <news@…>"); empty: MAILER_FROM_ADDRESS')
REPLY_TO = typer.Option(None, "--reply-to", help="its own Reply-To; empty: the settings'")
CONSENT_TEXT = typer.Option(None, "--consent-text",
                            help="the consent the sign-up box states; empty: the settings'")
CONSENT_VERSION = typer.Option(None, "--consent-version",
                               help="the version of that text; empty: the settings'")
PUBLIC = typer.Option(None, "--public", help="yes: offered on the public forms; no: staff "
                                              "and import only")
ARCHIVE = typer.Option(None, "--archive", help="yes/no: its sent editions in the web archive")
SCHEDULE = typer.Option(None, "--schedule-cron",
                        help="its rhythm, five crontab fields, or 'off'; empty: the settings'")
CLICKS = typer.Option(None, "--click-tracking",
                      help="yes, no, or default (MAILER_CLICK_TRACKING)")
NO_TOPICS = typer.Option(None, "--no-topics",
                         help="a reader with nothing of their topics in an edition: 'skip' "
                              "or 'whole' (gets the whole edition)")
POSITION = typer.Option(None, "--position", help="its place among the lists (forms, admin)")


@app.command("create")
def create(
    slug: str = typer.Argument(..., help="its name in URLs: /subscribe/<slug>"),
    name: str = typer.Option(..., "--name", help="as readers see it"),
    list_id: str = typer.Option(..., "--list-id",
                                help="the List-Id header's id, e.g. events.example.org"),
    description: str | None = DESCRIPTION, from_address: str | None = FROM,
    reply_to: str | None = REPLY_TO, consent_text: str | None = CONSENT_TEXT,
    consent_version: str | None = CONSENT_VERSION, public: str | None = PUBLIC,
    archive: str | None = ARCHIVE, schedule_cron: str | None = SCHEDULE,
    click_tracking: str | None = CLICKS, no_topics: str | None = NO_TOPICS,
    position: int | None = POSITION,
) -> None:
    """Create a list."""
    fields = _fields(description=description, from_address=from_address, reply_to=reply_to,
                     consent_text=consent_text, consent_version=consent_version,
                     public=public, archive=archive, schedule_cron=schedule_cron,
                     click_tracking=click_tracking, no_topics=no_topics, position=position)
    try:
        with transaction() as session:
            lst = changes.create(session, by=cli_actor(), slug=slug, name=name,
                                 list_id=list_id, **fields)
            slug_made, public_made = lst.slug, lst.public
    except lists.ListError as exc:
        raise _fail(str(exc)) from None
    where = f"/subscribe/{slug_made}" if public_made else "no public form (private)"
    print(f"List {slug_made} created: {where}.")


@app.command("list")
def list_(archived: bool = typer.Option(False, "--archived", help="archived lists too"),
          as_json: bool = typer.Option(False, "--json", help="JSON, for scripts")) -> None:
    """Every list with its subscriptions per status."""
    with transaction() as session:
        counts = lists.subscription_counts(session)
        found = lists.all_lists(session, archived=archived)
        rows = [_summary(lst, counts.get(lst.id, {})) for lst in found]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("slug", "name", "List-Id", "public", *STATUSES, "archived")
    for row in rows:
        table.add_row(row["slug"], row["name"], row["list_id"],
                      "yes" if row["public"] else "no",
                      *(str(row["subscriptions"][s]) for s in STATUSES),
                      row["archived_at"] or "")
    Console().print(table)


@app.command("show")
def show(slug: str, as_json: bool = typer.Option(False, "--json", help="JSON, for scripts")
         ) -> None:
    """A list's settings and its subscriptions per status."""
    with transaction() as session:
        lst = _open(session, slug)
        data = {**{f: _plain(getattr(lst, f)) for f in FIELDS},
                **_summary(lst, lists.subscription_counts(session).get(lst.id, {}))}
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for name in FIELDS:
        value = data[name]
        shown = "(the settings')" if value is None else \
            ("yes" if value else "no") if isinstance(value, bool) else str(value)
        print(f"{name}: {shown}")
    for status in STATUSES:
        print(f"{status}: {data['subscriptions'][status]}")
    if data["archived_at"]:
        print(f"archived: {data['archived_at']}")


@app.command("edit")
def edit(
    slug: str,
    name: str | None = typer.Option(None, "--name", help="as readers see it"),
    list_id: str | None = typer.Option(None, "--list-id", help="the List-Id header's id"),
    description: str | None = DESCRIPTION, from_address: str | None = FROM,
    reply_to: str | None = REPLY_TO, consent_text: str | None = CONSENT_TEXT,
    consent_version: str | None = CONSENT_VERSION, public: str | None = PUBLIC,
    archive: str | None = ARCHIVE, schedule_cron: str | None = SCHEDULE,
    click_tracking: str | None = CLICKS, no_topics: str | None = NO_TOPICS,
    position: int | None = POSITION,
) -> None:
    """Change the fields given; the others stay as they are."""
    fields = _fields(name=name, list_id=list_id, description=description,
                     from_address=from_address, reply_to=reply_to, consent_text=consent_text,
                     consent_version=consent_version, public=public, archive=archive,
                     schedule_cron=schedule_cron, click_tracking=click_tracking,
                     no_topics=no_topics, position=position)
    if not fields:
        raise _fail("nothing to change: name a field (`mailer lists edit --help`)", 2)
    try:
        with transaction() as session:
            changed = changes.edit(session, _open(session, slug), by=cli_actor(), **fields)
    except lists.ListError as exc:
        raise _fail(str(exc)) from None
    print(f"List {slug}: changed {', '.join(changed)}." if changed
          else f"List {slug}: nothing changed.")


@app.command("archive")
def archive_(slug: str, yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Archive a list: no sign-ups and no new editions from now on; its history stays."""
    if not yes:
        typer.confirm(f"Archive the list {slug}? It takes no sign-ups and no new editions "
                      "from now on.", abort=True)
    with transaction() as session:
        lst = _open(session, slug)
        if not changes.archive(session, lst, by=cli_actor()):
            print(f"List {slug} was archived already ({format_time(lst.archived_at)}).")
            return
    print(f"List {slug} is archived: no sign-ups, no new editions; its history stays.")


def _summary(lst: MailingList, counts: dict[str, int]) -> dict[str, Any]:
    return {"slug": lst.slug, "name": lst.name, "list_id": lst.list_id, "public": lst.public,
            "subscriptions": {s: counts.get(s, 0) for s in STATUSES},
            "archived_at": lst.archived_at.isoformat() if lst.archived_at else None}


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
