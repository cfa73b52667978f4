"""``mailer report EDITION``: how an edition went, in the terminal — the figures of its
report mail and its insight page (``--json`` for scripts). Exit status 1: no such edition."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from mailer.config import get_settings
from mailer.db import transaction
from mailer.insight.editions import edition_figures
from mailer.insight.report import insight_url, lines


def report(edition: int = typer.Argument(..., help="The edition's id (mailer editions list)."),
           as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON.")
           ) -> None:
    """An edition's figures after its send: delivered, bounced, complaints, clicks per link."""
    with transaction() as session:
        figures = edition_figures(session, edition) if 0 < edition < 2**31 else None
    if figures is None:
        typer.echo(f"There is no edition {edition}.", err=True)
        raise typer.Exit(1)
    if as_json:
        tables = figures.tables()
        typer.echo(json.dumps({
            "edition": figures.edition_id, "subject": figures.subject, "state": figures.state,
            "audience": figures.audience, "delivered": figures.delivered,
            "deferred": figures.deferred, "bounced": figures.bounced,
            "complaints": figures.complaints, "unsubscribes": figures.unsubscribes,
            "clicks": figures.clicks,
            "links": [dict(zip(tables["clicks"].columns, row, strict=True))
                      for row in tables["clicks"].rows],
            "per_minute": figures.per_minute,
            "refused_per_minute": figures.refused_per_minute,
            "deferrals_per_minute": figures.deferrals_per_minute,
        }, indent=2))
        return
    console = Console()
    console.print(f"[bold]{figures.subject}[/bold] (edition {figures.edition_id}, "
                  f"{figures.state})")
    summary = Table(show_header=False, box=None)
    for what, value in lines(figures):
        summary.add_row(what, value)
    console.print(summary)
    if figures.links:
        links = Table("Link", "Clicks", "Checkers and previews", title="Clicks per link")
        for link in figures.links:
            links.add_row(link.label, f"{link.clicks:,}",
                          f"{link.head_requests + link.scanner_clicks:,}")
        console.print(links)
    url = insight_url(figures.edition_id, base_url=get_settings().base_url)
    console.print(f"Charts: {url}")
