"""``mailer webhooks``: the endpoints outgoing webhooks go to.

``add`` registers a URL for some events and prints its ``whsec_`` secret once (the
receiver verifies signatures with it); ``list`` shows each endpoint, its events, whether it
is enabled and its deliveries by state; ``remove`` deletes one with its delivery log;
``enable`` turns a disabled one on again; ``redeliver`` sends one delivery again now.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from mailer.cli.actor import cli_actor
from mailer.cli.clock import format_time
from mailer.config import get_settings
from mailer.db import transaction
from mailer.webhooks import endpoints, sending
from mailer.webhooks.events import EVENTS

app = typer.Typer(no_args_is_help=True,
                  help="Outgoing webhooks: endpoints other systems are told of events at.")
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(1)


@app.command("add")
def add(
    url: str = typer.Argument(..., help="where events are posted, e.g. https://crm.example.org/hooks"),
    event: list[str] = typer.Option(..., "--event",
                                    help=f"repeat for each: {', '.join(EVENTS)}; or 'all'"),
    description: str = typer.Option("", "--description", help="what receives them"),
) -> None:
    """Register URL for the events named and print its secret once."""
    wanted = list(EVENTS) if event == ["all"] else event
    try:
        with transaction() as session:
            endpoint = endpoints.add(session, url=url, events=wanted, by=cli_actor(),
                                     settings=get_settings().webhooks, description=description)
            number, secret, names = endpoint.id, endpoint.secret, ", ".join(endpoint.events)
    except endpoints.EndpointError as exc:
        _fail(str(exc))
    print(secret)
    err.print(f"Endpoint {number}: {url} ({names}). The secret above is shown only this "
              "once: give it to the receiver, which verifies each request with it.",
              markup=False, highlight=False)


@app.command("list")
def list_() -> None:
    """Every endpoint: its URL, events, state and deliveries by state (never the secret)."""
    table = Table("id", "url", "events", "state", "created", "pending", "delivered", "failed")
    with transaction() as session:
        by_state = sending.counts_by_endpoint(session)
        for e in endpoints.all_endpoints(session):
            state = "enabled" if e.enabled else f"disabled {format_time(e.disabled_at)}" \
                if e.disabled_at else "disabled"
            table.add_row(str(e.id), e.url, ", ".join(e.events), state,
                          f"{format_time(e.created_at)} by {e.created_by}",
                          *(str(by_state.get(e.id, {}).get(s, 0))
                            for s in ("pending", "delivered", "failed")))
    Console().print(table)


@app.command("remove")
def remove(endpoint_id: int) -> None:
    """Remove endpoint ENDPOINT_ID, its deliveries and their log."""
    try:
        with transaction() as session:
            url = endpoints.remove(session, endpoint_id, by=cli_actor()).url
    except endpoints.EndpointError as exc:
        _fail(str(exc))
    print(f"Endpoint {endpoint_id} ({url}) is removed: it hears of nothing more.")


@app.command("enable")
def enable(endpoint_id: int) -> None:
    """Enable a disabled endpoint again; what was still due is retried from now."""
    try:
        with transaction() as session:
            url = endpoints.enable(session, endpoint_id, by=cli_actor()).url
    except endpoints.EndpointError as exc:
        _fail(str(exc))
    print(f"Endpoint {endpoint_id} ({url}) is enabled.")


@app.command("redeliver")
def redeliver(delivery_id: int) -> None:
    """Send delivery DELIVERY_ID again now (its id is in the admin's delivery log)."""
    try:
        with transaction() as session:
            sending.redeliver(session, delivery_id, by=cli_actor())
    except endpoints.EndpointError as exc:
        _fail(str(exc))
    print(f"Delivery {delivery_id} is queued again.")
