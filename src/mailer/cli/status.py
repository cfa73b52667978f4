"""``mailer status``: the queues, the workers and every edition being sent, at a glance.

On a terminal it is a live view, redrawn every ``--interval`` seconds until Ctrl-C.
``--once`` prints it once; ``--json`` prints one snapshot as JSON for scripts. With either,
the exit status says whether all is well: 0 yes, 1 an alert holds (the output says which).
"""

from __future__ import annotations

import json
import sys
import time

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mailer.db import transaction
from mailer.localtime import format_time
from mailer.ops import status as ops_status


def _snapshot() -> ops_status.Snapshot:
    with transaction() as session:
        return ops_status.collect(session)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(seconds)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def render(snapshot: ops_status.Snapshot) -> Group:
    now = time.time()
    parts: list[object] = []
    if snapshot.alerts:
        lines = Text()
        for i, alert in enumerate(snapshot.alerts):
            style = "bold red" if alert.severity == "critical" else "yellow"
            lines.append(("\n" if i else "") + f"{alert.name}: ", style=style)
            lines.append(alert.message)
        parts.append(Panel(lines, title="Alerts", border_style="red"))
    else:
        parts.append(Text("All is well: no alert.", style="bold green"))

    queues = Table(title="Queues", title_justify="left")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    queues.add_column("last worker activity")
    queues.add_column("")
    if snapshot.queues is None:
        queues.add_row("?", "?", f"Redis unreachable: {snapshot.redis_error}", "")
    else:
        for queue in snapshot.queues:
            queues.add_row(queue.name, f"{queue.depth:,}",
                           _ago(now - queue.last_activity if queue.last_activity else None),
                           Text("not draining", style="red") if queue.stalled else "")
        queues.caption = f"held by workers (running or waiting to retry): {snapshot.unacked}"

    workers = Table(title="Workers", title_justify="left")
    for column in ("worker", "queues", "processes", "heartbeat"):
        workers.add_column(column)
    if snapshot.workers is None:
        workers.add_row("?", "", "", "Redis unreachable")
    elif not snapshot.workers:
        workers.add_row(Text("none running", style="red"), "", "", "")
    for worker in snapshot.workers or []:
        workers.add_row(worker.hostname, ", ".join(worker.queues), str(worker.concurrency or ""),
                        _ago(now - worker.last_beat))

    editions = Table(title="Editions under way", title_justify="left")
    for column in ("edition", "state", "progress", "sent", "deferred", "failed", "bounced",
                   "per s", "time left"):
        editions.add_column(column, justify="right" if column in (
            "sent", "deferred", "failed", "bounced", "per s") else "left")
    for edition in snapshot.editions:
        p = edition.progress
        name = f"{edition.id} {edition.subject[:40]}"
        if p is None:
            when = format_time(edition.scheduled_at) if edition.scheduled_at else ""
            editions.add_row(name, edition.state, f"starts {when}", "", "", "", "", "", "")
            continue
        bar = Group(ProgressBar(total=100, completed=p.percent, width=24),
                    Text(f"{p.percent:.1f} % of {p.audience:,}"))
        eta = "–" if p.eta_seconds is None else _ago(p.eta_seconds).replace(" ago", "")
        editions.add_row(name, edition.state + (f"\n{p.reason[:60]}" if p.reason else ""), bar,
                         f"{p.counts.get('sent', 0):,}", f"{p.counts.get('deferred', 0):,}",
                         f"{p.counts.get('failed', 0):,}", f"{p.counts.get('bounced', 0):,}",
                         f"{p.rate_per_second:.1f}", eta)
    if not snapshot.editions:
        editions.add_row("nothing is being sent or scheduled", "", "", "", "", "", "", "", "")
    parts += [queues, workers, editions,
              Text(f"as of {format_time(snapshot.at, seconds=True)}", style="dim")]
    return Group(*parts)  # type: ignore[arg-type]


def status(
    as_json: bool = typer.Option(False, "--json", help="print one snapshot as JSON and exit"),
    once: bool = typer.Option(False, "--once", help="print the view once and exit"),
    interval: float = typer.Option(2.0, help="seconds between redraws of the live view"),
) -> None:
    """The queues, the workers, and every edition being sent (a live view; --json for scripts).

    With --json or --once the exit status is 0 when all is well and 1 when an alert holds.
    """
    if as_json:
        snapshot = _snapshot()
        sys.stdout.write(json.dumps(snapshot.as_dict(), indent=2, default=str) + "\n")
        raise typer.Exit(0 if snapshot.healthy else 1)
    console = Console()
    if once or not console.is_terminal:
        snapshot = _snapshot()
        console.print(render(snapshot))
        raise typer.Exit(0 if snapshot.healthy else 1)
    try:
        with Live(render(_snapshot()), console=console, refresh_per_second=4,
                  screen=False) as live:
            while True:
                time.sleep(max(0.5, interval))
                live.update(render(_snapshot()))
    except KeyboardInterrupt:
        pass
