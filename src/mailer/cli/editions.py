"""``mailer editions``: draft a digest, choose its articles, preview it, check it.

Every change is made by the editions service as ``cli:<user>``, which audits it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from mailer.articles.models import Article
from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_date, format_time, window_label
from mailer.config import get_settings
from mailer.db import transaction
from mailer.delivery import service as sending
from mailer.delivery.preflight import preflight
from mailer.editions import queries, service
from mailer.editions.compose import INTRO_HINT, category_order, reading_order, twice_greeted
from mailer.editions.models import Edition
from mailer.editions.states import EDITABLE

app = typer.Typer(no_args_is_help=True, help="Editions of the digest.")
out = Console()
err = Console(stderr=True)

SINCE_HELP = "start of the window: YYYY-MM-DD (midnight, association's time zone) or ISO time"
UNTIL_HELP = "end of the window: YYYY-MM-DD (that whole day included) or ISO time"


@app.command("new")
def new(
    subject: str = typer.Option(None, help="default: '<list name> – <month year>'"),
    since: str = typer.Option(None, help=SINCE_HELP),
    until: str = typer.Option(None, help=UNTIL_HELP),
) -> None:
    """Draft an edition with the articles published since the last one went out."""
    with _editing() as session:
        edition = service.draft_edition(
            session, subject=subject, window_start=_moment(since, "since"),
            window_end=_moment(until, "until", end_of_day=True), by=cli_actor(),
            identity=get_settings().identity)
        typer.echo(f"Drafted edition {edition.id} ({edition.slug}): “{edition.subject}”, "
                   f"{len(edition.articles)} article(s) published {_window(edition)}.")
        if not edition.articles:
            hint = queries.empty_window_hint(
                session, earlier="use --since",
                none_yet="Import some first: mailer articles import SOURCE.",
                zone=get_settings().identity.zone)
            err.print(f"[yellow]No article was published in that window. {hint}[/yellow]")
        typer.echo(f"Next: mailer editions show {edition.id}, then "
                   f"mailer editions preview {edition.id} --out edition.html")


@app.command("list")
def list_() -> None:
    """Every edition, newest first."""
    table = Table("id", "slug", "state", "articles", "window", "subject")
    with transaction() as session:
        listing = queries.edition_list(session)
        counts = listing.articles
        for edition in listing.editions:
            state = edition.state + (f"\n{format_time(edition.scheduled_at)}"
                                     if edition.state == "scheduled" and edition.scheduled_at
                                     else "")
            table.add_row(str(edition.id), edition.slug, state, str(counts.get(edition.id, 0)),
                          _window(edition), edition.subject)
    out.print(table)


@app.command("show")
def show(edition_id: int) -> None:
    """The edition's articles in the order a reader sees them, and the ones left out."""
    with transaction() as session:
        edition = _edition(session, edition_id)
        out.print(f"[bold]{edition.subject}[/bold]  (edition {edition.id}, {edition.state}, "
                  f"{edition.slug})")
        out.print(f"Window: articles published {_window(edition)}")
        if edition.state == "scheduled" and edition.scheduled_at:
            out.print(f"Goes out: {format_time(edition.scheduled_at)}")
        if edition.preheader:
            out.print(f"Preheader: {edition.preheader}")
        if edition.intro:
            out.print(f"Intro: {edition.intro}")
        table = Table("#", "article", "published", "title")
        section = None
        for position, (name, article) in enumerate(_reading_order(edition), start=1):
            if name != section:
                table.add_section()
                table.add_row("", "", "", f"[bold]{name}[/bold]")
                section = name
            table.add_row(str(position), str(article.id), format_date(article.published_at),
                          article.title)
        out.print(table)
        order = category_order(edition.category_order, get_settings().articles)
        out.print(f"Sections in this order: {', '.join(order)}")
        left_out = service.candidate_articles(session, edition)
        if left_out:
            out.print("In the window but not in the edition (mailer editions add "
                      f"{edition.id} ARTICLE):")
            for article in left_out:
                out.print(f"  {article.id}  {format_date(article.published_at)}  {article.title}")


@app.command("preview")
def preview(
    edition_id: int,
    out_file: Path = typer.Option(..., "--out", help="where to write the HTML", dir_okay=False),
    text_file: Path = typer.Option(None, "--text", help="also write the text part here",
                                   dir_okay=False),
    variant: int = typer.Option(None, "--variant", min=1,
                                help="the variant of this number (readers' topics) instead "
                                     "of the whole edition"),
) -> None:
    """Write the HTML exactly as a reader gets it (a sample reader's personal links), and
    list the edition's variants (its readers' topics) with how many readers each reaches."""
    with _editing() as session:
        edition = _edition(session, edition_id)
        views = sending.variant_overview(session, edition)
        chosen = None
        if variant is not None:
            chosen = next((v for v in views if v.number == variant), None)
            if chosen is None:
                err.print(f"[red]Edition {edition_id} has no variant {variant}.[/red]")
                raise typer.Exit(1)
        rendered = service.render_preview(session, edition, settings=get_settings(),
                                          articles=chosen.article_ids if chosen else None)
        problem = _sendability(session, edition) if edition.state in EDITABLE else None
    if len(views) > 1:
        table = Table("variant", "readers", "articles", title="Variants (readers' topics)")
        for view in views:
            name = ("whole" if view.number is None else "nothing in their topics"
                    if view.number < 0 else str(view.number))
            table.add_row(name, f"{view.readers:,}",
                          f"{len(view.titles)}: " + " · ".join(view.titles))
        out.print(table)
    out_file.write_text(rendered.html, encoding="utf-8")
    typer.echo(f"Subject: {rendered.subject}")
    typer.echo(f"Wrote {out_file} ({len(rendered.html.encode()):,} bytes of HTML)")
    if text_file:
        text_file.write_text(rendered.text, encoding="utf-8")
        typer.echo(f"Wrote {text_file}")
    if problem:
        err.print(f"[yellow]Not sendable yet: {problem}[/yellow]")


@app.command("edit")
def edit(
    edition_id: int,
    subject: str = typer.Option(None),
    preheader: str = typer.Option(None, help="the line shown after the subject in the inbox"),
    intro: str = typer.Option(None, help="text; blank lines separate paragraphs. " + INTRO_HINT),
    intro_file: Path = typer.Option(None, exists=True, dir_okay=False,
                                    help="read the intro from a text file"),
    since: str = typer.Option(None, help=SINCE_HELP + " (chooses the articles again)"),
    until: str = typer.Option(None, help=UNTIL_HELP + " (chooses the articles again)"),
    categories: str = typer.Option(None, help="order of the sections, comma-separated"),
) -> None:
    """Change the subject, preheader, intro, window or order of the sections."""
    if intro_file:
        intro = intro_file.read_text(encoding="utf-8")
    with _editing() as session:
        edition = service.update_edition(
            session, _edition(session, edition_id), subject=subject, preheader=preheader,
            intro=intro, window_start=_moment(since, "since"),
            window_end=_moment(until, "until", end_of_day=True),
            category_order=[c.strip() for c in categories.split(",")] if categories else None,
            by=cli_actor(), identity=get_settings().identity)
        typer.echo(f"Edition {edition.id} updated: {len(edition.articles)} article(s).")
        if intro and (warning := twice_greeted(intro)):
            err.print(f"[yellow]{warning}[/yellow]")


@app.command("add")
def add(edition_id: int, article_ids: list[int]) -> None:
    """Add articles (from the window or not) at the end of the edition."""
    with _editing() as session:
        edition = _edition(session, edition_id)
        for article_id in article_ids:
            service.add_article(session, edition, article_id, by=cli_actor())
    typer.echo(f"Added {len(article_ids)} article(s).")


@app.command("drop")
def drop(edition_id: int, article_ids: list[int]) -> None:
    """Take articles out of the edition."""
    with _editing() as session:
        edition = _edition(session, edition_id)
        for article_id in article_ids:
            service.drop_article(session, edition, article_id, by=cli_actor())
    typer.echo(f"Dropped {len(article_ids)} article(s).")


@app.command("move")
def move(
    edition_id: int, article_id: int,
    position: int = typer.Argument(..., help="1 is the first, as `show` numbers them"),
) -> None:
    """Move an article within its section (the order of the sections: edit --categories)."""
    with _editing() as session:
        edition = _edition(session, edition_id)
        # Positions are counted as `show` lists them: the reading order.
        service.set_articles(session, edition, [a.id for _, a in _reading_order(edition)])
        service.move_article(session, edition, article_id, position - 1, by=cli_actor())
    typer.echo(f"Moved article {article_id}.")


@app.command("check")
def check(edition_id: int) -> None:
    """Say whether the edition can be sent, and if not, why."""
    with transaction() as session:
        problem = _sendability(session, _edition(session, edition_id))
    if problem:
        err.print(f"[red]{problem}[/red]")
        raise typer.Exit(1)
    typer.echo("Ready to send.")


# --- helpers -------------------------------------------------------------------------------

@contextmanager
def _editing() -> Iterator[Session]:
    """A transaction whose EditionError becomes a red message and exit status 1."""
    try:
        with transaction() as session:
            yield session
    except service.EditionError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def _reading_order(edition: Edition) -> list[tuple[str, Article]]:
    return reading_order([link.article for link in edition.articles], edition.category_order,
                         get_settings().articles)


def _sendability(session: Session, edition: Edition) -> str | None:
    """What keeps the edition from going out now, as a send would say it (None: ready)."""
    checked = preflight(session, edition, settings=get_settings())
    return "; ".join(p.message for p in checked.problems) or None


def _edition(session: Session, edition_id: int) -> Edition:
    edition = session.get(Edition, edition_id)
    if edition is None:
        err.print(f"[red]There is no edition {edition_id} (mailer editions list).[/red]")
        raise typer.Exit(1)
    return edition


def _moment(value: str | None, option: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """A date is midnight in the association's time zone (``--until``: the next midnight)."""
    if not value:
        return None
    zone = ZoneInfo(get_settings().identity.timezone)
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value) + dt.timedelta(days=1 if end_of_day else 0)
            return dt.datetime.combine(day, dt.time(), tzinfo=zone)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD) or an ISO time",
                                 param_hint=f"--{option}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _window(edition: Edition) -> str:
    """The days the window covers, both included (the stored end is the moment after)."""
    return window_label(edition.window_start, edition.window_end)
