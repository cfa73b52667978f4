"""``mailer staff``: the accounts that log in to the admin at /admin.

Two roles: ``editor`` (compose and send editions, manage subscribers) and ``viewer``
(read only: editions, progress, bounces, the ops view and the audit log). Passwords are
asked for on the terminal (or read from standard input with ``--password-stdin``) and
stored as argon2 hashes.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from mailer.db import transaction
from mailer.staff import accounts
from mailer.staff.models import Role, StaffUser

app = typer.Typer(no_args_is_help=True, help="Staff accounts for the admin (/admin).")
err = Console(stderr=True)
ROLES = ", ".join(r.value for r in Role)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        accounts.check_password(password)
    except accounts.AccountError as exc:
        _fail(str(exc))
    return password


def _fail(message: str, code: int = 1) -> None:
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def _user(session: object, email: str) -> StaffUser:
    user = accounts.find(session, email)  # type: ignore[arg-type]
    if user is None:
        _fail(f"there is no staff account for {email}")
    assert user is not None
    return user


@app.command("create")
def create(
    email: str,
    role: str = typer.Option(Role.editor.value, help=f"one of: {ROLES}"),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="read the password from standard input"),
) -> None:
    """Create a staff account; the password is asked for twice (never on the command line)."""
    password = _password(password_stdin)
    try:
        with transaction() as session:
            user = accounts.create(session, email=email, password=password, role=role, by="cli")
            typer.echo(f"Created {user.role} {user.email}. Log in at /admin/login.")
    except accounts.AccountError as exc:
        _fail(str(exc))


@app.command("list")
def list_() -> None:
    """Every staff account, its role, and whether it is locked or disabled."""
    from mailer.db import utcnow
    from mailer.localtime import format_time

    table = Table("email", "role", "active", "last login", "locked until")
    with transaction() as session:
        now = utcnow()
        for user in accounts.everyone(session):
            locked = user.locked_until if user.locked_until and user.locked_until > now else None
            table.add_row(user.email, user.role, "yes" if user.active else "no",
                          format_time(user.last_login_at) if user.last_login_at else "never",
                          format_time(locked) if locked else "")
    Console(width=160).print(table)


@app.command("password")
def password(
    email: str,
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="read the password from standard input"),
) -> None:
    """Set a new password (and log the account out everywhere)."""
    new = _password(password_stdin)
    with transaction() as session:
        accounts.set_password(session, _user(session, email), new, by="cli")
    typer.echo(f"Password of {email} changed; its sessions are ended.")


@app.command("role")
def role(email: str, new_role: str = typer.Argument(..., metavar="ROLE", help=ROLES)) -> None:
    """Make an account an editor or a viewer."""
    try:
        with transaction() as session:
            accounts.set_role(session, _user(session, email), new_role, by="cli")
    except accounts.AccountError as exc:
        _fail(str(exc))
    typer.echo(f"{email} is now a {new_role}.")


@app.command("disable")
def disable(email: str) -> None:
    """Stop an account from logging in (its sessions end at once)."""
    with transaction() as session:
        accounts.set_active(session, _user(session, email), False, by="cli")
    typer.echo(f"{email} is disabled.")


@app.command("enable")
def enable(email: str) -> None:
    with transaction() as session:
        accounts.set_active(session, _user(session, email), True, by="cli")
    typer.echo(f"{email} is enabled.")


@app.command("unlock")
def unlock(email: str) -> None:
    """Lift a lock-out after too many failed logins."""
    with transaction() as session:
        accounts.unlock(session, _user(session, email), by="cli")
    typer.echo(f"{email} is unlocked.")
