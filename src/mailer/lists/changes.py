"""Staff's changes to a list, each with its audit entry (``list.create``, ``list.edit``,
``list.archive``) naming who made it: what the CLI and the admin call, so that both
write the same record. The checks are :mod:`mailer.lists.service`'s; nothing commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.lists import service
from mailer.lists.models import MailingList

#: Taken by the pages under /subscribe/: no list may have these as its slug.
RESERVED_SLUGS = frozenset({"embed"})


def create(session: Session, *, by: str, slug: str, name: str, list_id: str,
           **fields: Any) -> MailingList:
    if slug.strip().lower() in RESERVED_SLUGS:
        raise service.ListError(f"{slug.strip()!r} is taken by a page of its own: choose "
                                "another slug")
    lst = service.create(session, slug=slug, name=name, list_id=list_id, **fields)
    record(session, actor=by, action="list.create", target=f"list:{lst.id}",
           detail={"slug": lst.slug, "name": lst.name, "list_id": lst.list_id,
                   **{k: _plain(getattr(lst, k)) for k in fields}})
    return lst


def edit(session: Session, lst: MailingList, *, by: str, **fields: Any) -> list[str]:
    """Change the fields given; the names of those whose value changed (none: no entry)."""
    before = {k: _plain(getattr(lst, k)) for k in fields if k in service.EDITABLE}
    service.edit(session, lst, **fields)
    changed = sorted(k for k in before if before[k] != _plain(getattr(lst, k)))
    if changed:
        record(session, actor=by, action="list.edit", target=f"list:{lst.id}",
               detail={k: {"before": before[k], "after": _plain(getattr(lst, k))}
                       for k in changed})
    return changed


def archive(session: Session, lst: MailingList, *, by: str) -> bool:
    """Archive the list; False when it was archived already (then nothing is written)."""
    if lst.archived_at is not None:
        return False
    service.archive(session, lst)
    record(session, actor=by, action="list.archive", target=f"list:{lst.id}",
           detail={"slug": lst.slug})
    return True


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
