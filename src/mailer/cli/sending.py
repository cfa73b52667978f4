"""``mailer editions send|test|pause|resume|cancel|progress``: the send of an edition.

``send`` asks the same :func:`~mailer.delivery.preflight.preflight` as the admin's
confirmation page and refuses for the same reasons; every action is the sending service's,
made as ``cli:<user>`` and audited there."""

from __future__ import annotations

import datetime as dt
import json
import time

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_time
from mailer.cli.editions import app
from mailer.config import get_settings
from mailer.db import transaction
from mailer.delivery import service as sending
from mailer.delivery.preflight import preflight
from mailer.editions.models import Edition
from mailer.editions.service import EditionError

err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(1)


def _parse_time(value: str) -> dt.datetime:
    from zoneinfo import ZoneInfo

    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"not a time: {value!r} (use e.g. 2027-01-05T09:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(get_settings().identity.timezone))
    return moment


@app.command("send")
def send(
    edition_id: int,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation (scripts)"),
    at: str = typer.Option(None, "--at", help="schedule for this time instead (ISO; the "
                           "association's time zone unless given)"),
) -> None:
    """Send the edition to every confirmed reader (or schedule it with --at)."""
    when = _parse_time(at) if at else None
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise _fail(f"there is no edition {edition_id}")
        checked = preflight(session, edition, settings=get_settings())
        typer.echo(f"Edition {edition.id} “{edition.subject}” ({len(edition.articles)} articles), "
                   f"state {edition.state}.")
        if checked.started:
            typer.echo(f"It went out (or is going out) to {edition.audience_count:,} reader(s) "
                       "already: nothing new is queued.")
            return
        if not when and not checked.ok:
            for problem in checked.problems:
                err.print(f"[red]Not sent: {problem}[/red]")
            raise typer.Exit(1)
        typer.echo(f"It will go to {checked.audience or 0:,} confirmed reader(s)"
                   + (f" on {format_time(when)}." if when else " now."))
    if not yes:
        typer.confirm("Send it?" if not when else "Schedule it?", abort=True)
    try:
        with transaction() as session:
            if when:
                sending.schedule_send(session, edition_id, when, by=cli_actor(),
                                      settings=get_settings())
                typer.echo(f"Scheduled for {format_time(when)}; beat starts it then.")
                return
            frozen = sending.start_send(session, edition_id, by=cli_actor(),
                                        settings=get_settings())
    except (sending.SendError, EditionError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"Sending to {frozen:,} reader(s). Watch it: mailer editions progress {edition_id}")


@app.command("test")
def test(edition_id: int,
         to: list[str] = typer.Option(..., "--to", help="an address; repeat for more")) -> None:
    """Send a marked test copy to each --to address (not counted)."""
    try:
        results = sending.send_test_copies(edition_id, to, by=cli_actor(),
                                           settings=get_settings())
    except (sending.SendError, EditionError) as exc:
        raise _fail(str(exc)) from None
    for address, result in results:
        typer.echo(f"{address}: {result}")
    if any(not r.startswith("sent") for _, r in results):
        raise typer.Exit(1)


def _act(edition_id: int, action: str) -> None:
    try:
        with transaction() as session:
            getattr(sending, action)(session, edition_id, by=cli_actor())
    except sending.SendError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"edition {edition_id}: {action} done")


@app.command("pause")
def pause(edition_id: int) -> None:
    """Pause a send: workers stop within one batch; nothing queued is lost."""
    _act(edition_id, "pause")


@app.command("resume")
def resume(edition_id: int) -> None:
    """Resume a paused send where it stopped."""
    _act(edition_id, "resume")


@app.command("cancel")
def cancel(edition_id: int) -> None:
    """Cancel a send (or a scheduled one): what has not gone out never will."""
    _act(edition_id, "cancel")


@app.command("progress")
def progress(edition_id: int,
             follow: bool = typer.Option(True, help="keep watching until the send ends"),
             as_json: bool = typer.Option(False, "--json", help="one JSON object and exit"),
             ) -> None:
    """How far a send has come: counts per state, rate, time left."""
    def read() -> sending.Progress:
        with transaction() as session:
            return sending.progress(session, edition_id)

    try:
        current = read()
    except sending.SendError as exc:
        raise _fail(str(exc)) from None
    if as_json or not follow:
        typer.echo(json.dumps(current.as_dict()))
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,}"),
                  TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(f"edition {edition_id}", total=current.audience or 1, info="")
        while True:
            c = current.counts
            info = (f"sent {c.get('sent', 0):,} deferred {c.get('deferred', 0):,} "
                    f"failed {c.get('failed', 0):,} bounced {c.get('bounced', 0):,} "
                    f"skipped {c.get('skipped', 0):,} · {current.rate_per_second:.0f}/s · "
                    f"{current.state}")
            bar.update(task, completed=current.done, info=info)
            if current.state in ("sent", "cancelled", "paused", "draft"):
                break
            time.sleep(1)
            current = read()
    if current.reason:
        typer.echo(current.reason)


@app.command("acknowledge")
def acknowledge(edition_id: int) -> None:
    """Acknowledge an edition's complaints (over 0.3 % stops every send until you do)."""
    try:
        with transaction() as session:
            n = sending.acknowledge_complaints(session, edition_id, by=cli_actor())
    except sending.SendError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"edition {edition_id}: {n} complaint(s) acknowledged; sending may go on")
