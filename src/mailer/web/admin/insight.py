"""The admin's insight: an edition after its send, the list over time, deliverability.

Thin routes over :mod:`mailer.insight`: each page draws its charts (SVG, on the server)
next to the tables they picture, and each table is also a CSV at ``…/<table>.csv``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from mailer.db import transaction
from mailer.insight import charts
from mailer.insight.deliverability import deliverability
from mailer.insight.editions import edition_figures
from mailer.insight.growth import list_figures
from mailer.insight.tables import Table
from mailer.web.admin.auth import AdminRefusal, Staff, viewer
from mailer.web.admin.render import admin_page, headers
from mailer.web.bounds import RowId

router = APIRouter(prefix="/admin")


def _csv(tables: dict[str, Table], name: str, file_prefix: str) -> Response:
    table = tables.get(name)
    if table is None:
        raise AdminRefusal(404, f"There is no table {name!r} here.")
    return Response(table.csv(), media_type="text/csv; charset=utf-8", headers={
        **headers(), "Content-Disposition": f'attachment; filename="{file_prefix}-{name}.csv"'})


def _bounded(value: str, default: int, most: int) -> int:
    return min(int(value), most) if value.isascii() and value.isdigit() and len(value) < 6 \
        and int(value) > 0 else default


# --- an edition ---------------------------------------------------------------------------------

#: The widths a line over time is drawn in: minutes for a send of up to a day, hours for
#: one whose retries ran on for weeks, then days; never more than ~1,500 points.
_WIDTHS = ((dt.timedelta(minutes=1), dt.timedelta(days=1), "%H:%M", ""),
           (dt.timedelta(hours=1), dt.timedelta(days=60), "%m-%d %H:00", ", per hour"),
           (dt.timedelta(days=1), None, "%Y-%m-%d", ", per day"))


def _over_time(table: Table) -> tuple[str, list[str], list[list[float]]]:
    """A per-minute table (first column "YYYY-MM-DD HH:MM", a row only for minutes with
    something in them) as a chart's title, labels and lines: every minute from the first
    to the last, the empty ones 0, so that the line's length is time; summed per hour or
    per day when the send ran on longer than a day (retries can come days later)."""
    if not table.rows:
        return table.title, [], [[] for _ in table.columns[1:]]
    at = [dt.datetime.strptime(str(row[0])[:16], "%Y-%m-%d %H:%M") for row in table.rows]
    span = max(at) - min(at)
    width, _, label, named = next(w for w in _WIDTHS if w[1] is None or span <= w[1])

    def bucket(moment: dt.datetime) -> dt.datetime:
        return dt.datetime.min + (moment - dt.datetime.min) // width * width

    first, last = bucket(min(at)), bucket(max(at))
    steps = [first + k * width for k in range((last - first) // width + 1)]
    index = {moment: k for k, moment in enumerate(steps)}
    series: list[list[float]] = [[0.0] * len(steps) for _ in table.columns[1:]]
    for moment, row in zip(at, table.rows, strict=True):
        for column, value in enumerate(row[1:]):
            series[column][index[bucket(moment)]] += float(value)
    if width == _WIDTHS[0][0] and first.date() != last.date():
        label = "%m-%d %H:%M"
    return table.title + named, [m.strftime(label) for m in steps], series



def _edition(edition_id: int) -> Any:
    with transaction() as session:
        figures = edition_figures(session, edition_id)
    if figures is None:
        raise AdminRefusal(404, f"There is no edition {edition_id}.")
    return figures


@router.get("/editions/{edition_id}/insight", response_class=HTMLResponse)
def edition_page(request: Request, edition_id: RowId, staff: Staff = Depends(viewer)
                 ) -> HTMLResponse:
    figures = _edition(edition_id)
    tables = figures.tables()
    outcome = tables["outcome"]
    clicks = tables["clicks"]
    minutes = tables["per-minute"]
    deferrals = tables["deferrals"]
    over_time = tables["deferrals-per-minute"]
    pictures = {
        "outcome": charts.bars(outcome.title, [str(r[0]) for r in outcome.rows],
                               [outcome.column(1)]),
        "clicks": charts.bars(clicks.title, [str(r[0]) for r in clicks.rows],
                              [clicks.column(2)]),
        "per-minute": charts.lines(*_over_time(minutes), ["accepted", "refused"]),
        "deferrals": charts.bars(deferrals.title, [str(r[0]) for r in deferrals.rows],
                                 [deferrals.column(3), deferrals.column(4)],
                                 ["deferred", "refused"]),
        "deferrals-per-minute": charts.lines(*_over_time(over_time), over_time.columns[1:]),
    }
    return admin_page(request, "insight-edition.html", staff, figures=figures, tables=tables,
                      pictures=pictures, csv_base=f"/admin/editions/{edition_id}/insight")


@router.get("/editions/{edition_id}/insight/{name}.csv")
def edition_csv(edition_id: RowId, name: str, staff: Staff = Depends(viewer)) -> Response:
    return _csv(_edition(edition_id).tables(), name, f"edition-{edition_id}")


# --- the list over time ---------------------------------------------------------------------------


@router.get("/insight/list", response_class=HTMLResponse)
def list_page(request: Request, weeks: str = "26", staff: Staff = Depends(viewer)
              ) -> HTMLResponse:
    count = _bounded(weeks, 26, 520)
    with transaction() as session:
        figures = list_figures(session, count)
        tables = figures.tables()
        week = tables["weeks"]
        unsubscribes = tables["unsubscribes"]
        statuses = tables["statuses"]
        labels = [str(r[0]) for r in week.rows]
        pictures = {
            "weeks": charts.lines(week.title, labels,
                                  [week.column(i) for i in (1, 2, 3, 4)], week.columns[1:]),
            "unsubscribes": charts.lines(
                unsubscribes.title, labels,
                [unsubscribes.column(i) for i in range(1, len(unsubscribes.columns))],
                unsubscribes.columns[1:]) if figures.channels else None,
            "statuses": charts.bars(statuses.title, [str(r[0]) for r in statuses.rows],
                                    [statuses.column(1)]),
        }
        return admin_page(request, "insight-list.html", staff, session=session,
                          figures=figures, tables=tables, pictures=pictures, weeks=count,
                          csv_base="/admin/insight/list", query=f"?weeks={count}")


@router.get("/insight/list/{name}.csv")
def list_csv(name: str, weeks: str = "26", staff: Staff = Depends(viewer)) -> Response:
    with transaction() as session:
        tables = list_figures(session, _bounded(weeks, 26, 520)).tables()
    return _csv(tables, name, "list")


# --- deliverability -----------------------------------------------------------------------------


@router.get("/insight/deliverability", response_class=HTMLResponse)
def deliverability_page(request: Request, editions: str = "10", staff: Staff = Depends(viewer)
                        ) -> HTMLResponse:
    count = _bounded(editions, 10, 100)
    with transaction() as session:
        figures = deliverability(session, count)
        tables = figures.tables()
        domains = tables["domains"]
        pictures = {"domains": charts.bars(
            domains.title, [str(r[0]) for r in domains.rows],
            [domains.column(2), domains.column(3), domains.column(4)],
            ["accepted", "deferred", "refused"])}
        return admin_page(request, "insight-deliverability.html", staff, session=session,
                          figures=figures, tables=tables, pictures=pictures, editions=count,
                          csv_base="/admin/insight/deliverability", query=f"?editions={count}")


@router.get("/insight/deliverability/{name}.csv")
def deliverability_csv(name: str, editions: str = "10", staff: Staff = Depends(viewer)
                       ) -> Response:
    with transaction() as session:
        tables = deliverability(session, _bounded(editions, 10, 100)).tables()
    return _csv(tables, name, "deliverability")
