"""Changing a subscriber's name fields: on their behalf (the API's PATCH), audited with who
changed them, or by the reader on their preference page (``by=None``: the consent event
the page writes is the record). The fields a sign-up sets, checked as the form checks them.

The address is not among them: a new address is a new sign-up, confirmed from its own
inbox (double opt-in), never a plain change. Never commits.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.subscribers.models import Subscriber
from mailer.subscribers.signup import FIELD_LIMITS, clean_text, profile_problems

#: What may be changed: the sign-up form's fields but the address.
FIELDS = ("first_name", "last_name", "organisation", "country")


class ProfileError(ValueError):
    """Some values cannot be used; ``problems`` names each field and says why."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


def update_profile(session: Session, subscriber: Subscriber, changes: Mapping[str, str],
                   *, by: str | None) -> list[str]:
    """Set the given name fields; the names of those that changed (none: nothing
    written, nothing audited; ``by`` None: the reader, not audited). Raises ProfileError
    (nothing changed) for a value the form would refuse, or a field that is not one of
    FIELDS."""
    unknown = sorted(set(changes) - set(FIELDS))
    problems = {name: "This field cannot be changed." for name in unknown}
    problems |= profile_problems(changes)
    if problems:
        raise ProfileError(problems)
    changed = []
    for name in FIELDS:
        if name in changes:
            value = clean_text(changes[name], FIELD_LIMITS[name])
            if getattr(subscriber, name) != value:
                setattr(subscriber, name, value)
                changed.append(name)
    if changed:
        # updated_at is when the latest sign-up was (the purge of unconfirmed sign-ups
        # counts from it): a change of name must not keep an unconfirmed one alive.
        signed_up = subscriber.updated_at
        session.flush()
        session.execute(update(Subscriber).where(Subscriber.id == subscriber.id)
                        .values(updated_at=signed_up))
        session.refresh(subscriber)
        # The fields' names only: the audit log is kept longer than a person's data.
        if by is not None:
            record(session, actor=by, action="subscriber.update",
                   target=f"subscriber:{subscriber.id}", detail={"fields": changed})
    return changed
