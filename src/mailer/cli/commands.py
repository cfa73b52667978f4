"""The Typer side of the ``mailer`` command: one sub-command per domain, each imported only
when used (see :mod:`mailer.cli`, which imports this module only when no quick path
serves the command line).

``mailer --help`` names every group from the table below without importing one, and
``mailer bounces classify --attribute`` imports the bounce parser and the database layer
only: a command starts in the time its own imports take.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

#: name → (module, what its ``app`` or its command function is called, one line of help).
#: The help line is the module's own (a test checks they agree): it is listed here so
#: that ``mailer --help`` need not import the module to show it.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("mailer.cli.db", "app", "Database schema migrations (Alembic)."),
    "subscribers": ("mailer.cli.subscribers", "app", "Subscribers and their consent."),
    # the group of cli/lists.py, with the topic commands cli/list_topics.py adds to it
    "lists": ("mailer.cli.list_topics", "app", "Mailing lists: their own From, consent, rhythm."),
    "outbox": ("mailer.cli.outbox", "app", "The local SMTP catcher for development."),
    "local-redis": ("mailer.cli.local_redis", "app",
                    "A Redis of its own for development, under var/redis/ (make run starts "
                    "and stops it)."),
    "articles": ("mailer.cli.articles", "app",
                 "The website's articles, imported from its feed."),
    # the group of cli/editions.py, with the send commands cli/sending.py adds to it
    "editions": ("mailer.cli.sending", "app", "Editions of the digest."),
    # the group of cli/bounces.py, with serve and import from cli/bounce_intake.py
    "bounces": ("mailer.cli.bounce_intake", "app", "Bounces and complaints."),
    "suppressions": ("mailer.cli.suppressions", "app",
                     "The suppression list: addresses never mailed again, with the evidence."),
    "staff": ("mailer.cli.staff", "app", "Staff accounts for the admin (/admin)."),
    "tokens": ("mailer.cli.tokens", "app", "API tokens for /api/v1 (shown once, stored hashed)."),
    "webhooks": ("mailer.cli.webhooks", "app",
                 "Outgoing webhooks: endpoints other systems are told of events at."),
    "report": ("mailer.cli.report", "report",
               "An edition's figures after its send: delivered, bounced, complaints, clicks "
               "per link."),
    "status": ("mailer.cli.status", "status",
               "The queues, the workers, and every edition being sent (a live view; --json "
               "for scripts)."),
}


def load(name: str) -> Any:
    """The click command (or group) of one entry of :data:`COMMANDS`, imported now."""
    module_name, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    command: Any
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # a group, as add_typer would make it
    else:  # a single command function
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The top-level group: commands of :data:`COMMANDS` are imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS:
            return load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, help_line) for name, (_, _, help_line) in COMMANDS.items()]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# Plain help for the top level (rich_markup_mode=None): rich's help walks every command,
# which would import them all. The groups keep Typer's rich help.
app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)


@app.callback()
def root() -> None:
    """mailer: a self-hosted newsletter sender."""


@app.command("check")
def check() -> None:
    """Check that the database and Redis answer (make run calls this first)."""
    from mailer.cli.check import check as run_check

    run_check()
