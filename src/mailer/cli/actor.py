"""Who a command acts as, for the audit log: ``cli:<the operating-system user>``."""

from __future__ import annotations

import getpass


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
