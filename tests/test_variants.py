"""Topics in an edition: composed once per distinct set of articles its readers' topics
select, each reader mailed their variant through real workers, a real Redis and a real SMTP
server, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import lxml.html
from sqlalchemy import select, update

from mailer.articles.models import Article
from mailer.config import get_settings
from mailer.db import transaction, utcnow
from mailer.deliveries.models import Delivery
from mailer.delivery import service as sending
from mailer.editions import service as editions
from mailer.editions import variants
from mailer.editions.compose import (
    Composed,
    default_preheader,
    digest_context,
    placeholders,
    sections,
)
from mailer.editions.models import Edition, EditionVariant
from mailer.editions.snapshot import with_tracked_links
from mailer.emails.render import inline_css, jinja_env
from mailer.lists import service as lists
from mailer.lists import topics
from mailer.lists.models import Subscription
from mailer.subscribers.models import Subscriber
from tests.support.admin import Admin, make_staff
from tests.support.factories import FIRST_LIST, IDENTITY, make_subscribers, start, wait_sent
from tests.support.mail import parse, parts

TRACKED = re.compile(r"https?://[^\s\"<>]+/r/\d+/\d+/[\w-]+")

#: The edition's articles: title → categories. "CEP Events" has an article outside the
#: edition's window only (a topic with nothing in this edition).
ARTICLES = {
    "Probation and mental health care": ["Mental Health"],
    "Sentencing reform in three countries": ["Criminal Justice"],
    "A new partner in the Baltic states": ["Partners"],
    "Partners in mental health": ["Mental Health", "Partners"],
}


def _edition() -> tuple[int, dict[str, int]]:
    """A draft of the four articles on the first list, its topics synced; returns the
    edition and the topic ids by label."""
    now = utcnow()
    batch = secrets.token_hex(3)
    with transaction() as session:
        for i, (title, categories) in enumerate(ARTICLES.items()):
            session.add(Article(
                guid=f"https://www.cep-probation.org/?p={i}&b={batch}",
                link=f"https://www.cep-probation.org/{batch}/article-{i}/", title=title,
                published_at=now - dt.timedelta(days=i + 1), categories=categories,
                author="CEP", summary_html=f"<p>About {title}.</p>",
                summary_text=f"About {title}."))
        session.add(Article(guid=f"old-{batch}", link=f"https://www.cep-probation.org/{batch}/",
                            title="An event of long ago", categories=["CEP Events"],
                            published_at=now - dt.timedelta(days=400)))
        session.flush()
        edition = editions.draft_edition(session, identity=IDENTITY, by="test", audit=False,
                                         subject="Topics test edition",
                                         window_start=now - dt.timedelta(days=10))
        topics.sync(session, FIRST_LIST)
        ids = {v.label: v.id for v in topics.catalogue(session, FIRST_LIST)}
        return edition.id, ids


def _follow(address: str, topic_ids: list[int] | None) -> None:
    with transaction() as session:
        subscriber = session.scalar(select(Subscriber.id).where(Subscriber.email == address))
        session.execute(update(Subscription).where(Subscription.subscriber_id == subscriber)
                        .values(topics=topic_ids))


def _titles(text: str) -> set[str]:
    return {title for title in ARTICLES if title in text}


def _mail_by_reader(smtp) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {m.rcpt_tos[0]: parts(parse(m)) for m in smtp.messages}


def test_each_reader_gets_the_articles_of_their_topics_one_variant_per_selection(
        clean, worker, web) -> None:
    everything, mental, mental_too, justice, partners_mental, events = make_subscribers(6)
    edition_id, ids = _edition()
    _follow(mental, [ids["Mental Health"]])
    _follow(mental_too, [ids["Mental Health"]])
    _follow(justice, [ids["Criminal Justice"]])
    _follow(partners_mental, [ids["Partners"], ids["Mental Health"]])
    _follow(events, [ids["CEP Events"]])  # nothing of theirs in this edition

    assert start(edition_id) == 6
    wait_sent(edition_id)
    mails = _mail_by_reader(clean.smtp)
    assert set(mails) == {everything, mental, mental_too, justice, partners_mental}
    got = {reader: (_titles(text), _titles(html)) for reader, (text, html) in mails.items()}
    both = {reader: t for reader, (t, h) in got.items() if t == h}
    assert both == {  # the text and the HTML part agree, and hold only the reader's topics
        everything: set(ARTICLES),
        mental: {"Probation and mental health care", "Partners in mental health"},
        mental_too: {"Probation and mental health care", "Partners in mental health"},
        justice: {"Sentencing reform in three countries"},
        partners_mental: {"Probation and mental health care",
                          "A new partner in the Baltic states", "Partners in mental health"},
    }
    # A section with nothing of the reader's is not there at all.
    assert ">Criminal Justice</td>" in mails[justice][1]
    assert ">Criminal Justice</td>" not in mails[mental][1]
    assert "CRIMINAL JUSTICE" not in mails[mental][0]
    assert mails[mental][1] != mails[justice][1]

    with transaction() as session:
        rows = variants.variants_of(session, edition_id)
        by_reader = dict(session.execute(
            select(Subscriber.email, Delivery.variant).join(
                Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition_id)).all())
        skipped = session.scalar(select(Delivery.outcome).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == events, Delivery.edition_id == edition_id))
        edition = session.get(Edition, edition_id)
        assert edition is not None
        overview = sending.variant_overview(session, edition)
    # Composed once per distinct selection: Mental Health twice is one variant.
    assert sorted(len(v.article_ids) for v in rows) == [1, 2, 3]
    assert sorted(v.readers for v in rows) == [1, 1, 2]
    assert by_reader[everything] is None  # the whole edition: its own snapshot, as before
    assert by_reader[mental] == by_reader[mental_too] is not None
    assert len({by_reader[mental], by_reader[justice], by_reader[partners_mental]}) == 3
    assert skipped == "nothing in their topics"
    assert (overview[0].number, len(overview[0].article_ids), overview[0].readers) == (
        None, 4, 1)
    assert sorted((len(v.article_ids), v.readers) for v in overview[1:-1]) == [
        (1, 1), (2, 2), (3, 1)]
    assert (overview[-1].number, overview[-1].readers) == (variants.NOTHING, 1)
    assert sum(v.readers for v in overview) == 6

    # Every variant's links are the edition's: a click on the justice reader's article
    # leads to it.
    text, html = mails[justice]
    tracked = sorted(set(TRACKED.findall(html)))
    assert tracked and sorted(set(TRACKED.findall(text))) == tracked
    answers = {httpx.get(web.url + urlsplit(url).path, timeout=10).headers.get("location")
               for url in tracked}
    assert any(a and a.endswith("/article-1/") for a in answers)
    assert not any(a and a.endswith("/article-0/") for a in answers)


def test_the_whole_edition_for_nothing_in_their_topics_when_the_list_says_so(
        clean, worker) -> None:
    reader, other = make_subscribers(2)
    edition_id, ids = _edition()
    with transaction() as session:
        found = lists.find(session, FIRST_LIST)
        assert found is not None
        lists.edit(session, found, no_topics="whole")
    _follow(reader, [ids["CEP Events"]])
    _follow(other, [ids["Criminal Justice"]])
    assert start(edition_id) == 2
    wait_sent(edition_id)
    mails = _mail_by_reader(clean.smtp)
    assert _titles(mails[reader][0]) == _titles(mails[reader][1]) == set(ARTICLES)
    assert _titles(mails[other][1]) == {"Sentencing reform in three countries"}


def test_readers_who_follow_everything_get_the_send_of_before(clean, worker) -> None:
    readers = make_subscribers(3)
    edition_id, ids = _edition()
    _follow(readers[0], [ids[label] for label in ids])  # every topic ticked by hand
    assert start(edition_id) == 3
    wait_sent(edition_id)
    with transaction() as session:
        assert variants.variants_of(session, edition_id) == []
        assert set(session.scalars(select(Delivery.variant)
                                   .where(Delivery.edition_id == edition_id))) == {None}
    mails = _mail_by_reader(clean.smtp)
    assert {frozenset(_titles(html)) for _, html in mails.values()} == {frozenset(ARTICLES)}


def test_nobody_with_anything_in_their_topics_is_a_refusal(clean) -> None:
    (reader,) = make_subscribers(1)
    edition_id, ids = _edition()
    _follow(reader, [ids["CEP Events"]])
    try:
        start(edition_id)
    except sending.SendError as exc:
        assert "topics" in str(exc)
    else:
        raise AssertionError("the send started with nobody to mail")
    with transaction() as session:
        assert session.scalar(select(Delivery.id).where(Delivery.edition_id == edition_id)) \
            is None
        assert session.get(Edition, edition_id).state == "draft"  # type: ignore[union-attr]


def test_a_variant_is_what_premailer_makes_of_its_own_articles(clean) -> None:
    edition_id, _ = _edition()
    settings = get_settings()
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        articles = [link.article for link in edition.articles]
        subsets = sorted({tuple(a.id for i, a in enumerate(articles) if n & (1 << i))
                          for n in range(1, 15)})
        composed, links = variants.compose_variants(edition, settings, subsets)
        env = jinja_env()
        for variant in composed:
            chosen = [a for a in articles if a.id in variant.article_ids]
            personal = placeholders(variant.placeholder_key)
            context = {**digest_context(edition, settings),
                       "sections": sections(chosen, edition.category_order, settings.articles,
                                            zone=settings.identity.zone),
                       "preheader": default_preheader(chosen)}
            own = inline_css(env.get_template("email/digest/body.html").render(
                **context, personal=personal, greeting=personal["greeting"]))
            text = env.get_template("email/digest/body.txt").render(
                **context, personal=personal, greeting=personal["greeting"])
            tracked = with_tracked_links(Composed("", own, text, "", 0, ""), edition, settings,
                                         known=links)[0]
            assert (variant.html, variant.text) == (tracked.html, tracked.text)  # byte for byte
            assert "<!--" not in variant.html + variant.text
            assert _titles(variant.html) == _titles(variant.text) == {a.title for a in chosen}


def test_the_preview_shows_each_variant_and_its_readers(clean, web) -> None:
    everything, mental, justice = make_subscribers(3)
    edition_id, ids = _edition()
    _follow(mental, [ids["Mental Health"]])
    _follow(justice, [ids["Criminal Justice"]])
    make_staff("viewer@cep.example", role="viewer")
    admin = Admin(web.url)
    admin.login("viewer@cep.example")
    page = lxml.html.fromstring(admin.get(f"/admin/editions/{edition_id}").text)
    rows = page.xpath("//div[@id='variants']//tr[@class='variant']")
    assert [(r.get("data-number"), r.xpath("string(td[@class='readers'])")) for r in rows] == [
        ("whole", "1"), ("1", "1"), ("2", "1")]
    second = admin.get(f"/admin/editions/{edition_id}/preview.html?variant=2").text
    first = admin.get(f"/admin/editions/{edition_id}/preview.html?variant=1").text
    assert sorted([_titles(first), _titles(second)], key=len) == [
        {"Sentencing reform in three countries"},
        {"Probation and mental health care", "Partners in mental health"}]
    assert admin.get(f"/admin/editions/{edition_id}/preview?variant=9").status_code == 404
    assert admin.get(f"/admin/editions/{edition_id}/preview?variant=x").status_code == 422
    admin.close()


def test_variants_are_frozen_with_the_audience_and_their_counts(clean) -> None:
    _, mental, justice = make_subscribers(3)
    edition_id, ids = _edition()
    _follow(mental, [ids["Mental Health"]])
    _follow(justice, [ids["Criminal Justice"]])
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        before = sending.variant_overview(session, edition)
    assert start(edition_id) == 3
    with transaction() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        after = sending.variant_overview(session, edition)
        stored = session.scalars(select(EditionVariant)
                                 .where(EditionVariant.edition_id == edition_id)).all()
    assert [(v.number, v.article_ids, v.readers) for v in before] == [
        (v.number, v.article_ids, v.readers) for v in after]
    assert len(stored) == 2


def test_mailer_editions_preview_lists_the_variants_and_writes_one(clean, tmp_path) -> None:
    _, justice = make_subscribers(2)
    edition_id, ids = _edition()
    _follow(justice, [ids["Criminal Justice"]])
    mailer = str(Path(sys.executable).parent / "mailer")
    out = tmp_path / "variant.html"
    shown = subprocess.run([mailer, "editions", "preview", str(edition_id), "--out", str(out),
                            "--variant", "1"], env={**clean.env, "COLUMNS": "160"},
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"whole\s+│\s+1\s+│\s+4: ", shown.stdout), shown.stdout
    assert re.search(r"1\s+│\s+1\s+│\s+1: Sentencing reform", shown.stdout), shown.stdout
    assert _titles(out.read_text(encoding="utf-8")) == {"Sentencing reform in three countries"}
    missing = subprocess.run([mailer, "editions", "preview", str(edition_id), "--out",
                              str(out), "--variant", "7"], env=clean.env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no variant 7" in missing.stderr


def test_categories_for_each_answers_as_categories_for_does(clean) -> None:
    _, ids = _edition()
    with transaction() as session:
        rows = {t.label: t for t in topics.all_topics(session, FIRST_LIST)}
        topics.merge(session, rows["Partners"], rows["Mental Health"])
        topics.hide(session, rows["CEP Events"])
        every = sorted(ids.values())
        sets: list[list[int] | None] = [None, [], [10**6], *(
            [i for k, i in enumerate(every) if n & (1 << k)] for n in range(1, 2 ** len(every)))]
        one_by_one = [topics.categories_for(session, FIRST_LIST, s) for s in sets]
        assert topics.categories_for_each(session, FIRST_LIST, sets) == one_by_one
        assert frozenset({"Mental Health", "Partners"}) in one_by_one
