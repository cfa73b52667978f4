"""``mailer staff``: the accounts that log in to the admin at /admin.

Two roles: ``editor`` (compose and send editions, manage subscribers) and ``viewer``
(read only: editions, progress, bounces, the ops view and the audit log). Passwords are
asked for on the terminal (or read from standard input with ``--password-stdin``) and
stored as argon2 hashes. ``mailer staff totp reset`` turns off a lost second factor.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from mailer.db import transaction
from mailer.staff import accounts, totp
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
    """Every staff account, its role, whether it is disabled, and its second factor."""
    from mailer.cli.clock import format_time

    table = Table("email", "role", "active", "last login", "second factor")
    with transaction() as session:
        for user in accounts.everyone(session):
            table.add_row(user.email, user.role, "yes" if user.active else "no",
                          format_time(user.last_login_at) if user.last_login_at else "never",
                          "TOTP" if totp.has_second_factor(user) else "")
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
    """Forget the failed logins counted against this account (from every address), so
    that nobody has to wait before trying it again. Accounts are never locked: repeated
    failures only slow down the address they come from."""
    with transaction() as session:
        forgotten = accounts.unlock(session, _user(session, email), by="cli")
    typer.echo(f"Failed logins for {email} forgotten ({forgotten} address(es) had some).")


totp_app = typer.Typer(no_args_is_help=True, help="The optional second factor (TOTP).")
app.add_typer(totp_app, name="totp")


@totp_app.command("reset")
def totp_reset(email: str) -> None:
    """Turn off the second factor of an account whose phone is lost: its codes, recovery
    codes and sessions end; after logging in with the password, it can be set up again."""
    from mailer.staff.sessions import end_all_sessions

    with transaction() as session:
        user = _user(session, email)
        had = totp.turn_off(session, user, by="cli")
        if had:
            end_all_sessions(session, user)
    if had:
        typer.echo(f"The second factor of {email} is off and its sessions are ended. It can "
                   "be set up again under Account in the admin.")
    else:
        typer.echo(f"{email} has no second factor; nothing changed.")
