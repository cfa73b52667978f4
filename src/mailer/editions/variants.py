"""An edition's variants: the edition as the readers of some topics get it.

A reader who follows only some of a list's topics gets the edition's articles of those
topics (an article is theirs when one of its categories is in ``lists.topics.
categories_for``). The freeze groups the audience by topic set, and each distinct *set of
articles* those topic sets select is composed once: two topic sets that select the same
articles share a variant, one that selects every article gets the whole edition (the
edition's own snapshot, as before topics), one that selects none is skipped or gets the
whole edition (the list's ``no_topics``).

Composing a variant costs no rendering of its own: the edition's two parts are rendered
once (Jinja) with a comment around each section and each card (``compose.Marks``), the
HTML inlined once (premailer), the links of both rewritten once; a variant is those parts
with the other articles' cards (and the sections left empty) cut out, the preheader drawn
from its own titles, and the comments taken out. The CSS has no rule that depends on an
element's place among its siblings (and premailer is told to leave pseudo-classes alone),
so the cut is what rendering and inlining the variant's own articles gives
(``tests/test_variants.py`` checks both parts byte for byte). Every variant's links keep
the whole edition's ``/r/`` positions: a click counts for the article whatever the
variant.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from mailer.articles.models import Article
from mailer.clicks.links import Link
from mailer.clicks.models import EditionLink
from mailer.config import Settings
from mailer.editions.compose import (
    Composed,
    Marks,
    default_preheader,
    digest_context,
    new_placeholder_key,
    placeholders,
)
from mailer.editions.models import Edition, EditionVariant
from mailer.editions.snapshot import Personaliser, list_settings, with_tracked_links
from mailer.emails.render import inline_css, jinja_env
from mailer.lists import topics as list_topics
from mailer.lists.models import MailingList, NoTopicsPolicy

__all__ = ["NOTHING", "WHOLE", "VariantComposed", "assign", "compose_variants",
           "freeze_variants", "partial_subsets", "plan", "selected", "topics_of",
           "variants_of"]

#: What ``plan`` maps a topic set to besides a variant's number.
WHOLE = 0  # the whole edition: ``delivery.variant`` NULL
NOTHING = -1  # nothing of this edition is in the reader's topics: skipped

SKIPPED_OUTCOME = "nothing in their topics"


@dataclass(frozen=True)
class VariantComposed:
    article_ids: tuple[int, ...]
    subject: str
    html: str  # CSS inlined, links rewritten, with the placeholders of ``placeholder_key``
    text: str
    placeholder_key: str


# --- which articles ------------------------------------------------------------------------


def topics_of(key: str | None) -> list[int] | None:
    """A subscription's ``topics`` from the text the freeze groups by (``CAST(topics AS
    TEXT)``): None (or JSON null, or anything that is not a list of ids) follows everything."""
    if key is None:
        return None
    try:
        value = json.loads(key)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]


def selected(articles: Sequence[Article], categories: frozenset[str] | None
             ) -> tuple[int, ...]:
    """The ids of the articles (in the edition's order) one of whose categories is in
    ``categories``; every article for None (follows everything)."""
    if categories is None:
        return tuple(a.id for a in articles)
    return tuple(a.id for a in articles if any(c in categories for c in a.categories or ()))


def assign(session: Session, edition: Edition, keys: Iterable[str | None]
           ) -> dict[str | None, tuple[int, ...]]:
    """The articles each topic set of the audience (``CAST(subscription.topics AS TEXT)``)
    gets, the list's ``no_topics`` applied: every article (the whole edition), some, or
    none (skipped). The list's topics are read once (``categories_for_each``)."""
    articles = [link.article for link in edition.articles]
    everything = tuple(a.id for a in articles)
    mailing_list = session.get(MailingList, edition.list_id)
    whole_if_nothing = (mailing_list is not None
                        and mailing_list.no_topics == NoTopicsPolicy.whole)
    set_of = {}
    for key in keys:
        ids = topics_of(key)
        set_of[key] = None if ids is None else frozenset(ids)
    distinct = list(dict.fromkeys(set_of.values()))
    answers = list_topics.categories_for_each(
        session, edition.list_id, [None if s is None else sorted(s) for s in distinct])
    by_topics: dict[frozenset[int] | None, tuple[int, ...]] = {}
    for topic_set, categories in zip(distinct, answers, strict=True):
        chosen = selected(articles, categories)
        by_topics[topic_set] = everything if not chosen and whole_if_nothing else chosen
    return {key: by_topics[topic_set] for key, topic_set in set_of.items()}


def partial_subsets(edition: Edition, subsets: Iterable[tuple[int, ...]]
                    ) -> list[tuple[int, ...]]:
    """The distinct subsets that are neither the whole edition nor nothing, in the order
    their variants are numbered."""
    everything = tuple(link.article_id for link in edition.articles)
    return sorted({s for s in subsets if s and s != everything})


def plan(session: Session, edition: Edition, settings: Settings, keys: Iterable[str | None]
         ) -> dict[str | None, int]:
    """What each topic set of the audience gets: a variant's number (composed and stored
    here if it is new), :data:`WHOLE` or :data:`NOTHING`."""
    subset_of = assign(session, edition, keys)
    everything = tuple(link.article_id for link in edition.articles)
    numbers = freeze_variants(session, edition, settings,
                              partial_subsets(edition, subset_of.values()))
    return {key: (WHOLE if subset == everything else NOTHING if not subset
                  else numbers[subset]) for key, subset in subset_of.items()}


# --- composing and storing ---------------------------------------------------------------


def freeze_variants(session: Session, edition: Edition, settings: Settings,
                    subsets: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], int]:
    """The variant number of each article subset; those the edition has not got yet are
    composed (all in one go) and stored, their new links (none, unless a variant spells a
    link the whole edition has not) added to the edition's. Called under the edition's row
    lock (``start_send``): nobody else numbers its variants meanwhile."""
    have = {tuple(v.article_ids): v.number for v in variants_of(session, edition.id)}
    missing = [s for s in dict.fromkeys(subsets) if s not in have]
    if missing:
        known = [Link(row.position, row.url, row.label) for row in session.scalars(
            select(EditionLink).where(EditionLink.edition_id == edition.id))]
        composed, links = compose_variants(edition, settings, missing, known=known)
        old = {link.position for link in known}
        session.add_all(EditionLink(edition_id=edition.id, position=link.position,
                                    url=link.url, label=link.label)
                        for link in links if link.position not in old)
        number = int(session.scalar(select(func.coalesce(func.max(EditionVariant.number), 0))
                                    .where(EditionVariant.edition_id == edition.id)) or 0)
        rows = []
        for variant in composed:
            number += 1
            rows.append({"edition_id": edition.id, "number": number,
                         "article_ids": list(variant.article_ids),
                         "subject_snapshot": variant.subject, "html_snapshot": variant.html,
                         "text_snapshot": variant.text,
                         "placeholder_key": variant.placeholder_key, "readers": 0})
            have[variant.article_ids] = number
        session.flush()  # the links first
        session.execute(insert(EditionVariant), rows)  # one executemany, no ids read back
    return {s: have[s] for s in subsets}


def variants_of(session: Session, edition_id: int) -> list[EditionVariant]:
    return list(session.scalars(select(EditionVariant)
                                .where(EditionVariant.edition_id == edition_id)
                                .order_by(EditionVariant.number)))


def compose_variants(edition: Edition, settings: Settings, subsets: Sequence[tuple[int, ...]],
                     *, known: Sequence[Link] = ()) -> tuple[list[VariantComposed], list[Link]]:
    """Compose the variant of each article subset (see the module's docstring): one Jinja
    rendering of each part and one premailer run for all, a cut per variant.
    Returns the variants and the links they use (``known`` keeps its positions)."""
    settings = list_settings(edition, settings)  # its sender, List-Id, click tracking
    env = jinja_env()
    context = digest_context(edition, settings)
    key = new_placeholder_key()
    personal = placeholders(key)
    marks = Marks(key)
    preheader_slot = f"%%preheader_{key}%%"
    mail = {"personal": personal, "greeting": personal["greeting"]}
    page = env.get_template("email/digest/body.html")
    text_page = env.get_template("email/digest/body.txt")
    subject = " ".join(env.get_template("email/digest/subject.txt").render(**context).split())
    marked = Composed(
        subject=subject, html=inline_css(page.render(
            **{**context, "marks": marks, "preheader": preheader_slot}, **mail)),
        text=text_page.render(**{**context, "marks": marks}, **mail), archive_html="",
        article_count=int(context["article_count"]), placeholder_key=key)
    tracked, links = with_tracked_links(marked, edition, settings, known=known)
    html_tree = _parse(tracked.html, marks.prefix)
    text_tree = _parse(tracked.text, marks.prefix)
    articles = [link.article for link in edition.articles]
    results = []
    for subset in subsets:
        keep = set(subset)
        chosen = [a for a in articles if a.id in keep]
        preheader = edition.preheader.strip() or default_preheader(chosen)
        body = _cut(html_tree, keep).replace(preheader_slot, html.escape(preheader, quote=False))
        text = _cut(text_tree, keep)
        Personaliser(subject, body, text, key=key)  # its links and placeholders are there
        results.append(VariantComposed(tuple(a.id for a in chosen), subject, body, text, key))
    known = links or list(known)
    return results, list(known)


# --- cutting ------------------------------------------------------------------------------

_Section = list[str | tuple[int, str]]


def _parse(marked: str, prefix: str) -> list[str | _Section]:
    """The marked HTML as its pieces: text outside any section, and each section as its
    own text and its cards (article id, the card's HTML)."""
    pattern = re.compile(r"<!--" + re.escape(prefix) + r"(section|/section|card:\d+|/card)-->")
    parts = pattern.split(marked)
    top: list[str | _Section] = [parts[0]]
    section: _Section | None = None
    for i in range(1, len(parts), 2):
        mark, after = parts[i], parts[i + 1]
        if mark == "section":
            section = []
            top.append(section)
            section.append(after)
        elif mark == "/section":
            section = None
            top.append(after)
        elif mark.startswith("card:") and section is not None:
            section.append((int(mark[5:]), after))
        elif section is not None:  # "/card"
            section.append(after)
        else:
            top.append(after)
    return top


def _cut(tree: list[str | _Section], keep: set[int]) -> str:
    """The HTML with only the cards of ``keep``, and only the sections that keep one."""
    out: list[str] = []
    for item in tree:
        if isinstance(item, str):
            out.append(item)
        elif any(isinstance(p, tuple) and p[0] in keep for p in item):
            out.extend(p if isinstance(p, str) else p[1] for p in item
                       if isinstance(p, str) or p[0] in keep)
    return "".join(out)
