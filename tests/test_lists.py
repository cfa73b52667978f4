"""Lists (issue 12): a person is one subscriber, each list has its own subscription, double
opt-in and unsubscribe; suppression stays global; a send goes to its list alone, once per
person, with the list's own sender and List-Id."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import func, select

from mailer.config import get_settings
from mailer.db import transaction
from mailer.deliveries.models import Delivery
from mailer.lists import service as lists
from mailer.lists.models import MailingList
from mailer.privacy import purge_pending
from mailer.subscribers import importer
from mailer.subscribers.confirmation import (
    confirm,
    confirmation_token_value,
    mark_confirmation_sent,
)
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber
from mailer.subscribers.signup import Profile, sign_up
from mailer.subscribers.unsubscribe import unsubscribe, unsubscribe_url_for
from mailer.suppression.service import suppress
from tests.support.factories import (
    FIRST_LIST,
    make_edition,
    make_subscribers,
    stack_keys,
    start,
    wait_sent,
)
from tests.support.mail import parse
from tests.support.subscribers import ORIGIN, list_status, move_back, subscriber


def _events_list() -> MailingList:
    with transaction() as session:
        lst = lists.create(
            session, slug="events", name="CEP Events", list_id="events.cep-probation.example.org",
            from_address="CEP Events <events@cep-probation.example.org>",
            reply_to="events-desk@cep-probation.example.org", consent_version="events-1",
            consent_text="Yes, tell me about CEP's events.")
        session.expunge(lst)
        return lst


def _sign_up(email: str, *slugs: str) -> int:
    with transaction() as session:
        chosen = lists.lists_named(session, list(slugs))
        return sign_up(session, email=email, profile=Profile(first_name="Ida"), origin=ORIGIN,
                       signup=get_settings().signup, lists=chosen).id


def _tokens(subscriber_id: int) -> list[ConfirmationToken]:
    with transaction() as session:
        found = list(session.scalars(select(ConfirmationToken).where(
            ConfirmationToken.subscriber_id == subscriber_id).order_by(ConfirmationToken.id)))
        session.expunge_all()
        return found


def _confirm(token: ConfirmationToken) -> str:
    keys = stack_keys()
    with transaction() as session:
        return confirm(session, confirmation_token_value(token, keys=keys), ip="192.0.2.9",
                       user_agent="test", signup=get_settings().signup, keys=keys).status


def _event_lists(subscriber_id: int, kind: str) -> list[int | None]:
    with transaction() as session:
        return list(session.scalars(select(ConsentEvent.list_id).where(
            ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.kind == kind)
            .order_by(ConsentEvent.id)))


def test_double_opt_in_is_per_list(clean) -> None:
    events = _events_list()
    ida = _sign_up("ida@example.org", "newsletter")
    [first] = _tokens(ida)
    assert first.lists == [FIRST_LIST]
    assert _confirm(first) == "ok"
    assert list_status("ida@example.org") == "confirmed"
    assert list_status("ida@example.org", events.id) is None

    # Confirmed on one list, she signs up for another: that one waits for its own consent.
    assert _sign_up("ida@example.org", "events") == ida
    assert list_status("ida@example.org", events.id) == "pending"
    second = _tokens(ida)[-1]
    assert second.lists == [events.id]
    assert _confirm(second) == "ok"
    assert list_status("ida@example.org", events.id) == "confirmed"
    assert list_status("ida@example.org") == "confirmed"
    # Each list's consent is recorded with that list and its own consent version.
    assert _event_lists(ida, "subscribed") == [FIRST_LIST, events.id]
    assert _event_lists(ida, "confirmed") == [FIRST_LIST, events.id]
    with transaction() as session:
        versions = dict(session.execute(select(ConsentEvent.list_id, ConsentEvent.consent_version)
                                        .where(ConsentEvent.subscriber_id == ida,
                                               ConsentEvent.kind == "subscribed")).all())
    assert versions == {FIRST_LIST: get_settings().signup.consent_version,
                        events.id: "events-1"}


def test_one_link_for_two_lists_and_the_daily_limit(clean) -> None:
    events = _events_list()
    with transaction() as session:
        third = lists.create(session, slug="experts", name="Expert group",
                             list_id="experts.cep-probation.example.org", public=False)
        third_id = third.id
    ben = _sign_up("ben@example.org", "newsletter", "events")
    [token] = _tokens(ben)
    assert token.lists == [FIRST_LIST, events.id]  # one round, one mail, both lists
    with transaction() as session:
        mark_confirmation_sent(session, token.id, "<round-1@example.org>")
    assert _event_lists(ben, "confirmation_sent") == [FIRST_LIST, events.id]

    # A third list the same day: the link already in the inbox keeps working for its two
    # lists; the third gets a link of its own, whose mail waits for the daily limit.
    with transaction() as session:
        sign_up(session, email="ben@example.org", profile=Profile(), origin=ORIGIN,
                signup=get_settings().signup, lists=[session.get(MailingList, third_id)])
    first, newer = _tokens(ben)
    assert first.used_at is None and newer.lists == [third_id] and newer.sent_at is None
    from mailer.subscribers.confirmation import claim_confirmation_mail
    with transaction() as session:
        assert claim_confirmation_mail(session, ben) is None  # not a second mail today
    assert _confirm(first) == "ok"
    assert [list_status("ben@example.org", i) for i in (FIRST_LIST, events.id, third_id)] == [
        "confirmed", "confirmed", "pending"]
    assert _confirm(first) == "used"
    assert _confirm(newer) == "ok"
    assert list_status("ben@example.org", third_id) == "confirmed"


def test_unsubscribe_ends_one_list_and_everything_ends_all(clean) -> None:
    events = _events_list()
    make_subscribers(1, prefix="cleo")
    cleo = subscriber("cleo00000@example.net")
    assert cleo is not None
    with transaction() as session:
        lists_ = lists.lists_named(session, ["events"])
        sign_up(session, email=cleo.email, profile=Profile(), origin=ORIGIN,
                signup=get_settings().signup, lists=lists_)
    with transaction() as session:
        held = lists.subscription(session, cleo.id, events.id)
        assert held is not None
        held.status = "confirmed"
    with transaction() as session:
        person = session.get(Subscriber, cleo.id)
        assert unsubscribe(session, person, list_id=events.id, channel="link")
        assert not unsubscribe(session, person, list_id=events.id, channel="link")  # a repeat
    assert list_status(cleo.email, events.id) == "unsubscribed"
    assert list_status(cleo.email) == "confirmed"
    with transaction() as session:
        assert unsubscribe(session, session.get(Subscriber, cleo.id), list_id=None,
                           channel="link")
    assert list_status(cleo.email) == "unsubscribed"
    assert _event_lists(cleo.id, "unsubscribed") == [events.id, FIRST_LIST]


def test_a_send_goes_to_its_list_once_per_person_with_the_lists_sender(clean, worker) -> None:
    events = _events_list()
    both = make_subscribers(3, prefix="both")  # on the first list…
    only_first = make_subscribers(2, prefix="first")
    with transaction() as session:
        ids = session.scalars(select(Subscriber.id).where(Subscriber.email.in_(both))).all()
        from mailer.lists.models import Subscription
        session.add_all(Subscription(subscriber_id=i, list_id=events.id, status="confirmed")
                        for i in ids)  # … and on the events list
    only_events = make_subscribers(2, prefix="events", list_id=events.id)
    make_subscribers(2, prefix="pending", list_id=events.id, status="pending")
    with transaction() as session:  # suppression is global: no list mails this address
        hash_ = session.scalar(select(Subscriber.address_hash)
                               .where(Subscriber.email == only_events[0]))
        suppress(session, hash_, reason="manual", by="test")

    edition_id = make_edition("CEP Events – autumn", list_id=events.id)
    assert start(edition_id) == 4
    wait_sent(edition_id)
    received = clean.smtp.messages
    recipients = sorted(r for m in received for r in m.rcpt_tos)
    assert recipients == sorted(both + only_events[1:])  # exactly one copy each
    for mail in received:
        msg = parse(mail)
        assert msg["List-Id"] == "CEP Events <events.cep-probation.example.org>"
        assert msg["From"].addresses[0].addr_spec == "events@cep-probation.example.org"
        assert msg["Reply-To"] == "events-desk@cep-probation.example.org"
        assert f"?edition={edition_id}" in msg["List-Unsubscribe"]
    assert not set(only_first) & set(recipients)

    # A second start changes nothing: still one delivery per person.
    assert start(edition_id) == 4
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)
                              .where(Delivery.edition_id == edition_id)) == 4

    # RFC 8058 one-click from this edition ends the events list alone.
    person = subscriber(both[0])
    assert person is not None
    with transaction() as session:
        from mailer.insight.attribution import edition_of_unsubscribe, list_of_unsubscribe
        found = edition_of_unsubscribe(session, person.id, str(edition_id))
        assert found == edition_id
        target = list_of_unsubscribe(session, found, None)
        assert target.id == events.id
        unsubscribe(session, session.get(Subscriber, person.id), list_id=target.id,
                    channel="one-click", edition_id=found)
    assert list_status(both[0], events.id) == "unsubscribed"
    assert list_status(both[0]) == "confirmed"


def test_one_click_over_http_ends_only_the_editions_list(clean, web, worker) -> None:
    events = _events_list()
    [reader] = make_subscribers(1, prefix="dora")
    person = subscriber(reader)
    assert person is not None
    with transaction() as session:
        from mailer.lists.models import Subscription
        session.add(Subscription(subscriber_id=person.id, list_id=events.id, status="confirmed"))
    edition_id = make_edition("CEP Events – winter", list_id=events.id)
    assert start(edition_id) == 1
    wait_sent(edition_id)
    [mail] = clean.smtp.to(reader)
    header = parse(mail)["List-Unsubscribe"]
    url = next(part.strip("<> ") for part in header.split(",") if "/unsubscribe/" in part)
    answer = httpx.post(url, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert list_status(reader, events.id) == "unsubscribed"
    assert list_status(reader) == "confirmed"  # the newsletter goes on
    # An old link, naming neither an edition nor a list, ends the first list.
    page = httpx.get(unsubscribe_url_for(person.public_id, base_url=clean.base_url,
                                         keys=stack_keys()))
    assert page.status_code == 200 and "CEP Newsletter" in page.text
    # The page's second button ends everything.
    everything = httpx.post(unsubscribe_url_for(person.public_id, base_url=clean.base_url,
                                                keys=stack_keys()), data={"scope": "all"})
    assert everything.status_code == 200
    assert list_status(reader) == "unsubscribed"


def test_an_import_adds_a_list_and_leaves_the_others(clean) -> None:
    events = _events_list()
    make_subscribers(1, prefix="eve", status="unsubscribed")
    rows = [importer.Row(2, {"email": "eve00000@example.net"}),
            importer.Row(3, {"email": "new@example.org", "first_name": "New"})]
    report = importer.import_rows(rows, source="events 2026 form", by="test",
                                  check_deliverability=False, list_id=events.id)
    assert report.imported == 2
    assert list_status("eve00000@example.net") == "unsubscribed"  # left the newsletter: stays gone
    assert list_status("eve00000@example.net", events.id) == "confirmed"
    assert list_status("new@example.org", events.id) == "confirmed"
    assert list_status("new@example.org") is None
    again = importer.import_rows(rows, source="again", by="test", check_deliverability=False,
                                 list_id=events.id)
    assert again.imported == 0 and set(again.skips.values()) == {importer.Skip.exists}
    with pytest.raises(ValueError, match="no open list"):
        importer.import_rows(rows, source="x", by="test", check_deliverability=False,
                             list_id=999)


def test_an_unconfirmed_sign_up_to_a_second_list_is_forgotten_alone(clean) -> None:
    events = _events_list()
    make_subscribers(1, prefix="fay")
    fay = subscriber("fay00000@example.net")
    assert fay is not None
    _sign_up(fay.email, "events")
    move_back(fay.id, dt.timedelta(days=15))
    with transaction() as session:
        assert purge_pending(session, older_than=dt.timedelta(days=14)) == 1
    assert list_status(fay.email, events.id) is None  # never confirmed: forgotten
    assert list_status(fay.email) == "confirmed"  # the person and their newsletter stay
    assert _event_lists(fay.id, "subscribed") == []


@pytest.mark.parametrize("bad", [
    {"slug": "Bad Slug"}, {"list_id": "nodots"}, {"from_address": "not an address"},
    {"no_topics": "maybe"}, {"schedule_cron": "every day"}, {"name": ""}])
def test_a_list_refuses_bad_settings_in_words(clean, bad: dict[str, str]) -> None:
    fields = {"slug": "good", "name": "Good", "list_id": "good.example.org", **bad}
    with transaction() as session, pytest.raises(lists.ListError):
        lists.create(session, **fields)


def test_an_archived_list_takes_no_new_edition_and_no_import(clean) -> None:
    events = _events_list()
    with transaction() as session:
        lists.archive(session, session.get(MailingList, events.id))
    from mailer.editions.errors import EditionError
    with pytest.raises(EditionError, match="archived"):
        make_edition(list_id=events.id)
    with pytest.raises(ValueError, match="no open list"):
        importer.import_rows([], source="x", by="test", check_deliverability=False,
                             list_id=events.id)


def test_a_second_list_over_the_daily_limit_still_gets_a_link_its_mail_held(clean) -> None:
    events = _events_list()
    ida = _sign_up("ida@example.org", "newsletter")
    [first] = _tokens(ida)
    with transaction() as session:
        mark_confirmation_sent(session, first.id, "<round-1@example.org>")
    assert _confirm(first) == "ok"
    # The same day, over the address's limit (the form's counter), she joins events.
    with transaction() as session:
        sign_up(session, email="ida@example.org", profile=Profile(), origin=ORIGIN,
                signup=get_settings().signup, may_mail=False,
                lists=[session.get(MailingList, events.id)])
    newer = _tokens(ida)[-1]
    assert newer.lists == [events.id] and newer.sent_at is None
    assert newer.claimed_until is not None  # its mail waits a day…
    assert _confirm(newer) == "ok"  # … but the list can be confirmed
    assert list_status("ida@example.org", events.id) == "confirmed"


def test_a_link_kept_in_the_inbox_never_confirms_a_list_the_reader_left(clean) -> None:
    events = _events_list()
    ben = _sign_up("ben@example.org", "newsletter", "events")
    [token] = _tokens(ben)
    with transaction() as session:  # the link is in the inbox
        mark_confirmation_sent(session, token.id, "<round-1@example.org>")
    with transaction() as session:
        unsubscribe(session, session.get(Subscriber, ben), list_id=events.id, channel="link")
    [after] = _tokens(ben)
    assert after.lists == [FIRST_LIST] and after.used_at is None
    # Someone signs the address up for events again the same day; the link in the inbox
    # still does not name it (events gets a link of its own).
    _sign_up("ben@example.org", "events")
    assert [t.lists for t in _tokens(ben)] == [[FIRST_LIST], [events.id]]
    assert _confirm(_tokens(ben)[0]) == "ok"
    assert list_status("ben@example.org") == "confirmed"
    assert list_status("ben@example.org", events.id) == "pending"  # waits for its own link


def test_a_confirm_that_finds_nothing_pending_lifts_no_suppression(clean) -> None:
    cleo = _sign_up("cleo@example.org", "newsletter")
    [token] = _tokens(cleo)
    with transaction() as session:
        person = session.get(Subscriber, cleo)
        suppress(session, person.address_hash, reason="manual", by="test")
    # The link was checked (GET), then the reader left before pressing Confirm.
    keys = stack_keys()
    value = confirmation_token_value(token, keys=keys)
    from mailer.subscribers.confirmation import check_confirmation
    with transaction() as session:
        assert check_confirmation(session, value, keys=keys).status == "ok"
        unsubscribe(session, session.get(Subscriber, cleo), list_id=FIRST_LIST,
                    channel="link")
    assert _confirm(token) == "used"
    from mailer.suppression.service import is_suppressed
    with transaction() as session:
        assert is_suppressed(session, session.get(Subscriber, cleo).address_hash)


def test_a_huge_list_or_edition_in_an_unsubscribe_link_is_no_error(clean, web) -> None:
    [reader] = make_subscribers(1, prefix="gil")
    person = subscriber(reader)
    assert person is not None
    base = unsubscribe_url_for(person.public_id, base_url=clean.base_url, keys=stack_keys())
    for query in ("?list=3000000000", "?edition=3000000000", "?list=99999999999999999",
                  "?list=-1", "?list=0"):
        assert httpx.get(base + query).status_code == 200
        assert httpx.post(base + query, data={"List-Unsubscribe": "One-Click"}
                          ).status_code == 200
    assert list_status(reader) == "unsubscribed"  # the first list: the link named no other


def test_the_pages_name_the_lists_they_are_about(clean, web) -> None:
    events = _events_list()
    ida = _sign_up("ida@example.org", "events")
    [token] = _tokens(ida)
    value = confirmation_token_value(token, keys=stack_keys())
    shown = httpx.get(f"{clean.base_url}/confirm/{value}")
    assert shown.status_code == 200 and "receive the CEP Events" in shown.text
    done = httpx.post(f"{clean.base_url}/confirm/{value}")
    assert done.status_code == 200 and "next CEP Events" in done.text
    person = subscriber("ida@example.org")
    assert person is not None
    left = httpx.post(unsubscribe_url_for(person.public_id, base_url=clean.base_url,
                                          keys=stack_keys(), list_id=events.id))
    assert left.status_code == 200 and "not receive the CEP Events any more" in left.text
    assert list_status("ida@example.org", events.id) == "unsubscribed"


def test_a_search_by_status_is_over_all_lists_unless_a_list_is_named(clean) -> None:
    from mailer.lists.models import Subscription
    from mailer.subscribers import queries

    events = _events_list()
    make_subscribers(1, prefix="both")  # confirmed on the first list …
    make_subscribers(1, prefix="gone", status="unsubscribed")
    make_subscribers(1, prefix="wait", status="pending")
    with transaction() as session:
        both = session.scalar(select(Subscriber.id).where(Subscriber.email.like("both%")))
        session.add(Subscription(subscriber_id=both, list_id=events.id,
                                 status="unsubscribed"))  # … and left events

    def found(**kwargs: object) -> list[str]:
        with transaction() as session:
            return [s.email.split("0")[0] for s in queries.search(session, **kwargs)]

    assert found(status="confirmed") == ["both"]
    assert found(status="unsubscribed") == ["gone"]  # not "both": still on a list
    assert found(status="pending") == ["wait"]
    assert found(status="unsubscribed", list_id=events.id) == ["both"]
    assert found(list_id=events.id) == ["both"]
