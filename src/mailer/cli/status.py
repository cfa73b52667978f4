"""``mailer status``: the queues, the workers and every edition being sent, at a glance —
the same snapshot as the admin's Ops page (readiness checks, SMTP replies, the next
automatic draft included).

On a terminal it is a live view, redrawn every ``--interval`` seconds until Ctrl-C.
``--once`` prints it once; ``--json`` prints one snapshot as JSON for scripts. With either,
the exit status says how things stand: 0 all is well; 1 look at this today (only warnings
hold, e.g. a policy refusal in the last 24 h); 2 critical now (no worker, Redis away, a
queue not draining, a tripped circuit breaker, complaints at the stop rate).
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

from mailer.cli.clock import format_time
from mailer.config import get_settings
from mailer.ops import status as ops_status


def _snapshot() -> ops_status.Snapshot:
    return ops_status.full_snapshot(get_settings())


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
    queues.add_column("tasks waiting", justify="right")
    queues.add_column("deliveries waiting", justify="right")
    queues.add_column("last worker activity")
    queues.add_column("draining")
    if snapshot.queues is None:
        queues.add_row("?", "?", "?", f"Redis unreachable: {snapshot.redis_error}", "?")
    else:
        for queue in snapshot.queues:
            draining = (Text("no", style="red") if queue.stalled
                        else "yes" if queue.holds_work else "idle")
            queues.add_row(queue.name, f"{queue.depth:,}",
                           "–" if queue.deliveries_waiting is None
                           else f"{queue.deliveries_waiting:,}",
                           _ago(now - queue.last_activity if queue.last_activity else None),
                           draining)
        queues.caption = f"held by workers (running or waiting to retry): {snapshot.unacked}"

    workers = Table(title="Workers", title_justify="left")
    for column in ("worker", "queues", "processes", "heartbeat"):
        workers.add_column(column)
    if snapshot.workers is None:
        workers.add_row("?", "", "", "Redis unreachable")
    elif not snapshot.workers:
        workers.add_row(Text("none running", style="red"), "", "", "")
    for worker in snapshot.workers or []:
        workers.add_row(worker.hostname, ", ".join(worker.queues), str(worker.concurrency or "–"),
                        _ago(now - worker.last_beat))
    if snapshot.senders:
        workers.caption = "sending processes: " + ", ".join(
            f"{p['host']}:{p['pid']} "
            + ("gone" if not p["alive"] else
               f"(edition {p['edition_id']})" if p["edition_id"] else "(idle)")
            for p in snapshot.senders)

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
    parts += [queues, workers, editions, *_details(snapshot),
              Text(f"as of {format_time(snapshot.at, seconds=True)}", style="dim")]
    return Group(*parts)  # type: ignore[arg-type]


def _details(snapshot: ops_status.Snapshot) -> list[object]:
    """Readiness, what the workers counted, the next automatic draft (as on the Ops page)."""
    out: list[object] = []
    if snapshot.checks is not None:
        checks = Table(title="Readiness", title_justify="left")
        checks.add_column("check")
        checks.add_column("result")
        for name, result in snapshot.checks.items():
            checks.add_row(name, Text(result, style="green" if result.startswith("ok")
                                      else "red"))
        out.append(checks)
    replies = Table(title="SMTP replies the workers counted", title_justify="left")
    replies.add_column("reply")
    replies.add_column("count", justify="right")
    if snapshot.smtp is None:
        replies.add_row("?", "Redis unreachable")
    else:
        smtp = snapshot.smtp
        for code, n in sorted(smtp["codes"].items()):
            replies.add_row(code, f"{n:,}")
        if not smtp["codes"]:
            replies.add_row("no send yet", "0")
        average = f"{1000 * smtp['sum'] / smtp['count']:.0f} ms" if smtp["count"] else "–"
        replies.caption = (f"accepted: {smtp['sent']:,}; average SMTP transaction {average}")
        failures = (snapshot.tasks or {}).get("failure", {})
        retries = (snapshot.tasks or {}).get("retry", {})
        if failures or retries:
            replies.caption += "; task failures/retries: " + ", ".join(
                f"{name} {failures.get(name, 0)}/{retries.get(name, 0)}"
                for name in sorted({*failures, *retries}))
    out.append(replies)
    schedule = snapshot.schedule
    if schedule is not None:
        if schedule.get("error"):
            line = f"the schedule {schedule['cron']!r} is wrong: {schedule['error']}"
        elif schedule.get("next"):
            line = f"next {format_time(schedule['next'])}, from the schedule {schedule['cron']}"
        else:
            line = "switched off (MAILER_EDITION_SCHEDULE_CRON=off)"
        last = schedule.get("last")
        if last is not None:
            line += f"; last run {format_time(last.ran_at)}: {last.outcome}"
        out.append(Text(f"Automatic drafts: {line}"))
    return out


def status(
    as_json: bool = typer.Option(False, "--json", help="print one snapshot as JSON and exit"),
    once: bool = typer.Option(False, "--once", help="print the view once and exit"),
    interval: float = typer.Option(2.0, help="seconds between redraws of the live view"),
) -> None:
    """The queues, the workers, and every edition being sent (a live view; --json for scripts).

    With --json or --once the exit status is 0 when all is well, 1 when only warnings hold
    (look at this today) and 2 when a critical alert holds (act now).
    """
    if as_json:
        snapshot = _snapshot()
        sys.stdout.write(json.dumps(snapshot.as_dict(), indent=2, default=str) + "\n")
        raise typer.Exit(snapshot.exit_code)
    console = Console()
    if once or not console.is_terminal:
        snapshot = _snapshot()
        console.print(render(snapshot))
        raise typer.Exit(snapshot.exit_code)
    try:
        with Live(render(_snapshot()), console=console, refresh_per_second=4,
                  screen=False) as live:
            while True:
                time.sleep(max(0.5, interval))
                live.update(render(_snapshot()))
    except KeyboardInterrupt:
        pass
