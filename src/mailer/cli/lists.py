"""``mailer lists``: the lists readers subscribe to.

(Placeholder for the group: ``listsui`` brings ``create|list|show|edit|archive`` here; the
topic commands join this group from :mod:`mailer.cli.list_topics`.)
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Mailing lists: their own From, consent, rhythm.")
