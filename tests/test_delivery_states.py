"""The delivery lifecycle is declared once (``mailer.delivery.states``) and the statements
that move deliveries keep to it: every UPDATE of a delivery's state, read from the source
as it is (the batch's SQL strings, the SQLAlchemy statements of the sweeper, the holders
and the sending service), moves only from a state to one the table allows. And the two
spellings of "mailable" choose the same readers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sqlalchemy import select, text

from mailer.db import transaction
from mailer.deliveries.models import DeliveryState
from mailer.delivery import ledger
from mailer.delivery.states import FINAL_STATES, INITIAL, OPEN_STATES, TRANSITIONS, allowed
from mailer.subscribers.models import Subscriber
from mailer.subscribers.queries import MAILABLE_SQL, mailable
from mailer.suppression.service import suppress
from tests.support.bounce_mail import make_sent_edition
from tests.support.factories import FIRST_LIST, make_subscribers

D = DeliveryState
DELIVERY = Path(__file__).resolve().parents[1] / "src" / "mailer" / "delivery"


def test_the_table_covers_every_state_and_the_final_ones_are_never_left() -> None:
    assert set(TRANSITIONS) == set(DeliveryState)
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset(), state
    for state in OPEN_STATES:
        assert TRANSITIONS[state], state
    reached, frontier = {INITIAL}, [INITIAL]
    while frontier:
        for to in TRANSITIONS[frontier.pop()]:
            if to not in reached:
                reached.add(to)
                frontier.append(to)
    assert reached == set(DeliveryState)  # no state that nothing leads to
    assert not allowed("sent", "queued") and allowed("sending", "sent")


# --- the batch's hand-written SQL -------------------------------------------------------------

_UPDATE = re.compile(r"\bUPDATE\s+delivery\b", re.I)
_SET = re.compile(r"\bSET\s+state\s*=\s*('(?P<literal>\w+)'|(?P<param>%\(\w+\)s|:\w+|v\.state))")
_FROM = re.compile(r"\bWHERE\b.*?\b(?:d\.)?state\s*=\s*'(?P<from>\w+)'", re.S)


def _states_in(node: ast.AST) -> set[DeliveryState]:
    """Every ``D.<state>`` / ``DeliveryState.<state>`` named inside ``node``."""
    return {DeliveryState(n.attr) for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id in ("D", "DeliveryState") and n.attr in DeliveryState.__members__}


def _sender_tree() -> ast.Module:
    return ast.parse((DELIVERY / "sender.py").read_text(encoding="utf-8"))


def _outcome_states() -> set[DeliveryState]:
    """The states the sender records: the second argument of every ``Outcome(...)``."""
    found: set[DeliveryState] = set()
    for node in ast.walk(_sender_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Outcome":
            found |= _states_in(node.args[1])
    return found


def _release_states() -> set[DeliveryState]:
    """The states claims are given back as: every ``.release(..., to=...)``."""
    found: set[DeliveryState] = set()
    for node in ast.walk(_sender_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "release":
            for keyword in node.keywords:
                if keyword.arg == "to":
                    found |= _states_in(keyword.value)
    return found


def _ledger_sql() -> list[tuple[str, str]]:
    """Every SQL string of the ledger: module constants and the per-dialect tables."""
    found: list[tuple[str, str]] = []
    for name, value in vars(ledger).items():
        if isinstance(value, str):
            found.append((name, value))
        elif isinstance(value, dict):
            for dialect, statements in value.items():
                if isinstance(statements, dict):
                    found += [(f"{name}[{dialect}][{key}]", sql)
                              for key, sql in statements.items() if isinstance(sql, str)]
    return found


def test_every_statement_of_the_batch_makes_an_allowed_move() -> None:
    recorded, released = _outcome_states(), _release_states()
    assert recorded >= {D.sent, D.deferred, D.failed, D.bounced}
    assert released >= {D.queued, D.deferred}
    #: A state passed in rather than written: what the sender passes there.
    passed = {"v.state": recorded, ":state": recorded, "%(to)s": released, ":to": released}
    seen = 0
    for name, sql in _ledger_sql():
        for update in _UPDATE.split(sql)[1:]:  # each UPDATE, CTEs included
            update = update.split("RETURNING")[0]
            to = _SET.search(update)
            if to is None:
                continue  # changes no state
            source = _FROM.search(update)
            assert source is not None, f"{name}: moves deliveries from any state"
            from_state = DeliveryState(source["from"])
            if to["literal"]:
                targets = {DeliveryState(to["literal"])}
            else:
                assert to["param"] in passed, f"{name}: a state from {to['param']}"
                targets = passed[to["param"]]
            for target in targets:
                assert allowed(from_state, target), f"{name}: {from_state} → {target}"
            seen += 1
    assert seen >= 10  # claim, skip, record, release, defer_rest, in both dialects


# --- the SQLAlchemy statements ---------------------------------------------------------------


def _chain(node: ast.AST) -> list[ast.Call]:
    """The calls of a method chain ``update(X).where(...).values(...)``, outermost first."""
    calls = []
    while isinstance(node, ast.Call):
        calls.append(node)
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return calls


def _is_update_of_delivery(call: ast.Call) -> bool:
    return (getattr(call.func, "id", "") == "update" and len(call.args) == 1
            and getattr(call.args[0], "id", "") == "Delivery")


def _where_states(where: ast.Call) -> set[DeliveryState] | None:
    """The states a ``.where(...)`` allows, if it names ``Delivery.state``."""
    for arg in where.args:
        if isinstance(arg, ast.Compare) and getattr(arg.left, "attr", "") == "state":
            return _states_in(arg.comparators[0])
        if isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "in_" \
                and getattr(arg.func.value, "attr", "") == "state":
            return _states_in(arg.args[0])
    return None


def _assigned(function: ast.AST, name: str) -> set[DeliveryState]:
    return {state for node in ast.walk(function) if isinstance(node, ast.Assign)
            and any(getattr(t, "id", "") == name for t in node.targets)
            for state in _states_in(node.value)}


def test_every_sqlalchemy_update_of_a_delivery_makes_an_allowed_move() -> None:
    moves: list[tuple[str, DeliveryState, DeliveryState]] = []
    for path in sorted(DELIVERY.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "values"):
                    continue
                calls = _chain(node)
                if not _is_update_of_delivery(calls[-1]):
                    continue
                [state_kw] = [k for k in node.keywords if k.arg == "state"] or [None]
                if state_kw is None:
                    continue  # touches the row, not its state
                targets = _states_in(state_kw.value)
                if isinstance(state_kw.value, ast.Name):
                    targets = _assigned(function, state_kw.value.id)
                sources = set().union(*[s for c in calls if getattr(c.func, "attr", "") == "where"
                                        if (s := _where_states(c)) is not None])
                where = f"{path.name}:{node.lineno} ({function.name})"
                assert sources, f"{where}: moves deliveries from any state"
                assert targets, f"{where}: writes a state this test cannot read"
                moves += [(where, s, t) for s in sources for t in targets]
    for where, source, target in moves:
        assert allowed(source, target), f"{where}: {source} → {target}"
    assert {(s, t) for _, s, t in moves} >= {
        (D.queued, D.cancelled), (D.deferred, D.cancelled),  # cancelling the edition
        (D.deferred, D.queued),  # a retry that is due
        (D.sending, D.queued), (D.sending, D.cancelled),  # a gone holder's claims
    }


# --- mailable, twice in one place ------------------------------------------------------------


def test_both_spellings_of_mailable_choose_the_same_readers(clean) -> None:
    confirmed = make_subscribers(4)
    make_subscribers(2, prefix="pending", status="pending")
    make_subscribers(1, prefix="gone", status="unsubscribed")
    with transaction() as session:
        hash_ = session.scalar(select(Subscriber.address_hash)
                               .where(Subscriber.email == confirmed[0]))
        suppress(session, hash_, reason="manual", by="test")
    edition = make_sent_edition("sending")  # the list MAILABLE_SQL reads is its edition's
    with transaction() as session:
        by_expression = set(session.scalars(select(Subscriber.id).where(mailable(FIRST_LIST))))
        by_text = set(session.scalars(text(
            "SELECT s.id FROM subscriber s CROSS JOIN (SELECT :edition AS edition_id) d "  # noqa: S608
            f"WHERE {MAILABLE_SQL}"), {"edition": edition}))
        expected = set(session.scalars(select(Subscriber.id).where(
            Subscriber.email.in_(confirmed[1:]))))
    assert by_expression == by_text == expected
