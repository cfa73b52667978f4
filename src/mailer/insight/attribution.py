"""Which edition an unsubscribe came from: the edition its link names, if the reader was
sent that edition.

The link in an edition's mail carries ``?edition=<id>``. Nothing signs that part, so it is
believed only when the reader has a delivery of that edition: a reader can at most
attribute their own unsubscribe to another edition they were sent, and nobody can make
one count against an edition that never reached them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.deliveries.models import Delivery
from mailer.editions.models import Edition
from mailer.lists.models import MailingList
from mailer.lists.service import first_list

_DIGITS = 18  # more than any edition id; keeps int() away from huge input
_MAX_ID = 2**31 - 1


def edition_of_unsubscribe(session: Session, subscriber_id: int, given: str | None
                           ) -> int | None:
    edition_id = _row_id(given)
    if edition_id is None:
        return None
    found = session.scalar(select(Delivery.id).where(
        Delivery.subscriber_id == subscriber_id, Delivery.edition_id == edition_id).limit(1))
    return edition_id if found is not None else None


def list_of_unsubscribe(session: Session, edition_id: int | None, given: str | None
                        ) -> MailingList:
    """The list an unsubscribe link ends: the edition's, when it names one the reader was
    sent (``edition_of_unsubscribe``); else the list it names (``?list=``, in the mails
    that are not editions); else the first list, the only one there was when the link was
    mailed."""
    if edition_id is not None:
        edition = session.get(Edition, edition_id)
        if edition is not None and (found := session.get(MailingList, edition.list_id)):
            return found
    list_id = _row_id(given)
    if list_id is not None and (found := session.get(MailingList, list_id)) is not None:
        return found
    return first_list(session)


def _row_id(given: str | None) -> int | None:
    """A row id from a query string, or None: digits only, within the INTEGER columns'
    range (PostgreSQL refuses a larger bound value, which would be a 500)."""
    if not given or not given.isascii() or not given.isdigit() or len(given) > _DIGITS:
        return None
    value = int(given)
    return value if 1 <= value <= _MAX_ID else None
