"""``mailer articles``: import the website's articles from a feed, list them."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from mailer.articles.feeds import FeedError, load
from mailer.articles.importer import import_feed
from mailer.articles.models import Article
from mailer.cli.clock import format_time
from mailer.config import get_settings
from mailer.db import transaction

app = typer.Typer(no_args_is_help=True, help="The website's articles, imported from its feed.")
err = Console(stderr=True)


@app.command("import")
def import_(
    sources: list[str] = typer.Argument(
        ..., help="RSS 2.0 / Atom feed or JSON file: a URL or a file path"),
) -> None:
    """Import articles; a second import of the same items updates them, never duplicates."""
    failed = False
    settings = get_settings()
    for source in sources:
        try:
            # network and parsing: no transaction
            feed = load(source, settings.articles, website_url=settings.identity.website_url)
        except FeedError as exc:
            err.print(f"[red]{exc}[/red]")
            failed = True
            continue
        with transaction() as session:
            report = import_feed(session, feed, by="cli")
        for problem in report.problems:
            err.print(f"[yellow]{source}: {problem}[/yellow]")
        typer.echo(report.summary())
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_(
    limit: int = typer.Option(30, help="how many, newest first"),
) -> None:
    """The newest articles with their id (to add one to an edition)."""
    table = Table("id", "published", "category", "title")
    with transaction() as session:
        query = select(Article).order_by(Article.published_at.desc(), Article.id.desc())
        for article in session.scalars(query.limit(limit)):
            table.add_row(str(article.id), format_time(article.published_at),
                          ", ".join(article.categories) or "–", article.title)
    Console().print(table)
