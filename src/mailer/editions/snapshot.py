"""The edition's snapshot: rendered and inlined once, personalised per reader in microseconds.

``freeze`` composes the edition (Jinja + premailer, about 10 ms) and stores the subject, the
inlined HTML and the text part with placeholders, plus the archive copy and the key the
placeholders were made with. From then on every reader and every retry gets the same
bytes: a ``Personaliser`` splits each part once at its placeholders and a message is a join
of the pieces with the reader's values. Only the placeholders of the snapshot's own key are
filled: text from a feed that looks like a placeholder stays text (see ``compose``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import NamedTuple

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, object_session

from mailer.clicks.links import Link, rewrite
from mailer.clicks.models import EditionLink
from mailer.config import Settings
from mailer.editions.compose import (
    PERSONAL_FIELDS,
    Composed,
    compose,
    greeting_for,
    placeholders,
)
from mailer.editions.errors import EditionError, NotSendable
from mailer.editions.models import Edition, EditionVariant
from mailer.lists.models import MailingList
from mailer.lists.service import settings_for
from mailer.subscribers.unsubscribe import preferences_url_for, unsubscribe_url_for

__all__ = ["PERSONAL_FIELDS", "AsMailed", "Personaliser", "as_mailed", "check_composed",
           "freeze", "list_settings", "personaliser_for", "personaliser_of",
           "variant_personaliser", "view_url"]

#: A newsletter without a working unsubscribe or archive link must not go out.
_REQUIRED = ("unsubscribe_url", "view_url")


def freeze(session: Session, edition: Edition, settings: Settings) -> None:
    """Render and inline the edition once and store the result; a no-op when already frozen.

    Raises :class:`NotSendable` (no articles, HTML over budget). Two workers freezing the
    same edition at once: one conditional UPDATE wins and both go on with its bytes.
    """
    if edition.html_snapshot is not None:
        return
    settings = list_settings(edition, settings)
    composed, links = with_tracked_links(compose(edition, settings), edition, settings)
    check_composed(composed, edition, settings, links_tracked=True)
    won = session.execute(
        update(Edition)
        .where(Edition.id == edition.id, Edition.html_snapshot.is_(None))
        .values(subject_snapshot=composed.subject, html_snapshot=composed.html,
                text_snapshot=composed.text, archive_html=composed.archive_html,
                placeholder_key=composed.placeholder_key)
    )
    if won.rowcount:  # type: ignore[attr-defined]
        # The links of this snapshot; an earlier one's (an edit forgot it) go, and so do
        # the variants composed from it.
        session.execute(delete(EditionLink).where(EditionLink.edition_id == edition.id))
        session.execute(delete(EditionVariant).where(EditionVariant.edition_id == edition.id))
        session.add_all(EditionLink(edition_id=edition.id, position=link.position,
                                    url=link.url, label=link.label) for link in links)
        session.flush()
    session.refresh(edition)


def with_tracked_links(composed: Composed, edition: Edition, settings: Settings, *,
                       known: Sequence[Link] = ()) -> tuple[Composed, list[Link]]:
    """The composition as it is frozen: its links going through ``/r/`` (unless
    ``MAILER_CLICK_TRACKING`` is off), and those links (:mod:`mailer.clicks.links`).
    ``known``: the edition's links so far (a variant's keep the whole edition's positions)."""
    if not settings.editions.click_tracking:
        return composed, []
    rewritten = rewrite(composed.html, composed.text, edition_id=edition.id or 0,
                        base_url=settings.base_url, keys=settings.all_secrets, known=known)
    return replace(composed, html=rewritten.html, text=rewritten.text), rewritten.links


def check_composed(composed: Composed, edition: Edition, settings: Settings, *,
                   links_tracked: bool = False) -> None:
    """Raise :class:`NotSendable` if this composition of ``edition`` cannot be mailed.

    The size is that of the mail as it will be frozen, its links rewritten: a preview or
    a test copy of a draft (whose links lead straight to the articles) is checked against
    the bytes the send will have."""
    if composed.article_count == 0:
        raise NotSendable("This edition has no articles. Add at least one article (or widen "
                          "its window) before sending it.")
    if not links_tracked:
        composed = with_tracked_links(composed, edition, settings)[0]
    check_size(personaliser_of(composed), edition, settings)


def check_size(personaliser: Personaliser, edition: Edition, settings: Settings) -> None:
    """The HTML as the longest plausible reader would get it must fit the budget
    (``settings.editions.html_budget_bytes``)."""
    budget = settings.editions.html_budget_bytes
    size = len(personaliser.html(_longest_values(edition, settings)).encode("utf-8"))
    if size > budget:
        raise NotSendable(
            f"The HTML is {size:,} bytes, over the {budget:,}-byte budget by "
            f"{size - budget:,} bytes (Gmail cuts off longer messages). Drop an article or "
            "shorten the intro.")


def _longest_values(edition: Edition, settings: Settings) -> dict[str, str]:
    return {
        # the real length of the link, with the longest edition number it can name
        "unsubscribe_url": unsubscribe_url_for("f" * 32, 10**18, base_url=settings.base_url,
                                               keys=settings.all_secrets),
        "view_url": view_url(edition, settings.base_url),
        "first_name": "n" * 100,  # Subscriber.first_name holds up to 100 characters
        "email": "e" * 254,  # the longest address SMTP allows
        "preferences_url": preferences_url_for("f" * 32, base_url=settings.base_url,
                                               keys=settings.all_secrets),
    }


def list_settings(edition: Edition, settings: Settings) -> Settings:
    """``settings`` as the edition's list makes its mail (``lists.service.settings_for``:
    its sender, List-Id, click tracking). The edition must be in a session."""
    session = object_session(edition)
    lst = session.get(MailingList, edition.list_id) if session is not None else None
    if lst is None:
        raise EditionError(f"edition {edition.id} goes to list {edition.list_id}, which "
                           "is not there (or the edition is not in a session)")
    return settings_for(lst, settings)


def view_url(edition: Edition, base_url: str) -> str:
    """The edition's page in the web archive: the mail's "view in browser" link."""
    return f"{base_url}/archive/{edition.slug}"


class Personaliser:
    """Fills one reader's values into a frozen snapshot without rendering anything again.

    ``key`` is the one the snapshot was composed with: only its placeholders are slots."""

    def __init__(self, subject: str, html_snapshot: str, text_snapshot: str, *,
                 key: str | None, defaults: Mapping[str, str] | None = None) -> None:
        tokens = placeholders(key)
        pattern = re.compile("(" + "|".join(re.escape(t) for t in tokens.values()) + ")")
        field_of = {token: name for name, token in tokens.items()}
        self._subject = subject
        self._html = _split(html_snapshot, pattern, field_of)
        self._text = _split(text_snapshot, pattern, field_of)
        self._defaults = dict(defaults or {})
        for name in _REQUIRED:
            # A key that is not the snapshot's would leave the links unfilled.
            if not all(name in (n for _, n in part[1]) for part in (self._html, self._text)):
                raise EditionError(f"the snapshot has no {name} placeholder of its key")

    def subject(self, values: Mapping[str, str] | None = None) -> str:
        return self._subject

    def html(self, values: Mapping[str, str]) -> str:
        """The HTML part; the values are escaped here, safe inside text and attributes."""
        filled = self._values(values)
        return _join(self._html, {k: html.escape(v, quote=True) for k, v in filled.items()})

    def text(self, values: Mapping[str, str]) -> str:
        return _join(self._text, self._values(values))

    def layout(self, part: str) -> tuple[list[str], list[tuple[int, str]]]:
        """``part`` ("html" or "text") as its pieces, and where each value goes among them
        (the pieces at those places are the placeholders): for an assembler that encodes
        the constant pieces once."""
        return self._html if part == "html" else self._text

    def values_for(self, part: str, values: Mapping[str, str]) -> dict[str, str]:
        """The reader's values as they go into ``part`` (escaped for HTML, as in ``html``)."""
        filled = self._values(values)
        if part == "html":
            return {k: html.escape(v, quote=True) for k, v in filled.items()}
        return filled

    def _values(self, values: Mapping[str, str]) -> dict[str, str]:
        filled = {name: values.get(name) or self._defaults.get(name) or ""
                  for name in PERSONAL_FIELDS}
        for name in _REQUIRED:
            if not filled[name]:
                raise EditionError(f"no {name} given for this reader")
        filled["greeting"] = greeting_for(filled["first_name"])
        return filled


def _split(snapshot: str, pattern: re.Pattern[str], field_of: Mapping[str, str]
           ) -> tuple[list[str], list[tuple[int, str]]]:
    """The snapshot's pieces, and where each placeholder sits among them with its field."""
    pieces = pattern.split(snapshot)
    slots = [(i, field_of[pieces[i]]) for i in range(1, len(pieces), 2)]
    return pieces, slots


def _join(split: tuple[list[str], list[tuple[int, str]]], values: Mapping[str, str]) -> str:
    pieces, slots = split
    out = pieces.copy()
    for index, name in slots:
        out[index] = values[name]
    return "".join(out)


class AsMailed(NamedTuple):
    personaliser: Personaliser
    subject: str


def as_mailed(edition: Edition, settings: Settings, *, check: bool = False) -> AsMailed:
    """The edition as a reader gets it now: the frozen snapshot once there is one, else a
    fresh composition of the same kind (stored nowhere). ``check``: raise
    :class:`NotSendable` if it cannot be mailed (no articles, HTML over the budget).

    What a preview, the send checks and a test copy show, so that all three agree."""
    settings = list_settings(edition, settings)
    if edition.html_snapshot is not None:
        personaliser = personaliser_for(edition, settings.base_url)
        if check:  # frozen, so it had articles; the budget may have changed since
            check_size(personaliser, edition, settings)
        return AsMailed(personaliser, edition.subject_snapshot or edition.subject)
    composed = compose(edition, settings)
    if check:
        check_composed(composed, edition, settings)
    return AsMailed(personaliser_of(composed,
                                    defaults={"view_url": view_url(edition, settings.base_url)}),
                    composed.subject)


def personaliser_of(composed: Composed, *, defaults: Mapping[str, str] | None = None
                    ) -> Personaliser:
    """The personaliser of a fresh composition (a preview, a test copy of a draft)."""
    return Personaliser(composed.subject, composed.html, composed.text,
                        key=composed.placeholder_key, defaults=defaults)


def personaliser_for(edition: Edition, base_url: str) -> Personaliser:
    """The frozen edition's personaliser, built once per process and snapshot."""
    if edition.html_snapshot is None or edition.text_snapshot is None:
        raise EditionError(f"edition {edition.id} has not been frozen yet")
    return _cached_personaliser(edition.id, edition.subject_snapshot or edition.subject,
                                edition.html_snapshot, edition.text_snapshot,
                                edition.placeholder_key, view_url(edition, base_url))


@lru_cache(maxsize=8)
def _cached_personaliser(_edition_id: int, subject: str, html_snapshot: str,
                         text_snapshot: str, key: str | None,
                         default_view_url: str) -> Personaliser:
    # The cache key holds the snapshot itself: a re-frozen edition gets a new personaliser.
    return Personaliser(subject, html_snapshot, text_snapshot, key=key,
                        defaults={"view_url": default_view_url})


def variant_personaliser(edition: Edition, variant: EditionVariant, base_url: str
                         ) -> Personaliser:
    """A variant's personaliser (``mailer.editions.variants``): its own snapshot, the
    edition's archive page as its "view in browser" link."""
    return Personaliser(variant.subject_snapshot, variant.html_snapshot, variant.text_snapshot,
                        key=variant.placeholder_key,
                        defaults={"view_url": view_url(edition, base_url)})
