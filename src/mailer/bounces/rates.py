"""Per-edition bounce and complaint rates, for the circuit breaker and the admin.

Counted from the database (every bounce of every source is a Bounce row tied to its
edition), so the figures survive restarts and include what arrives days later: DSNs and
complaints come back long after the send has finished.

Denominators: a bounce rate is over the deliveries a server gave an answer for (sent,
bounced, failed); the complaint rate is over the deliveries a server accepted (sent), since
only a delivered message can be reported as spam. Each delivery counts once per class,
however many DSNs came back for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from mailer.bounces.models import Bounce, BounceClass
from mailer.config import SendingSettings
from mailer.deliveries.models import Delivery, DeliveryState

_COUNTED = (BounceClass.hard, BounceClass.soft, BounceClass.policy, BounceClass.complaint,
            BounceClass.delayed, BounceClass.autoreply, BounceClass.unparsed)


def class_counts(session: Session, edition_id: int) -> dict[str, int]:
    """The deliveries of an edition with a bounce of each class: one per delivery and class;
    a bounce tied to the edition but not to a delivery counts on its own."""
    return {klass: n for klass, n in session.execute(
        select(Bounce.bounce_class, func.count(distinct(func.coalesce(Bounce.delivery_id,
                                                                      -Bounce.id))))
        .where(Bounce.edition_id == edition_id, Bounce.bounce_class.in_(_COUNTED))
        .group_by(Bounce.bounce_class)
    )}


def class_counts_of(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """:func:`class_counts` for several editions in one query (editions without any bounce
    left out): the alerts watch every edition of the last 30 days on every admin page."""
    counts: dict[int, dict[str, int]] = {}
    for edition_id, klass, n in session.execute(
            select(Bounce.edition_id, Bounce.bounce_class,
                   func.count(distinct(func.coalesce(Bounce.delivery_id, -Bounce.id))))
            .where(Bounce.edition_id.in_(list(edition_ids)), Bounce.bounce_class.in_(_COUNTED))
            .group_by(Bounce.edition_id, Bounce.bounce_class)):
        counts.setdefault(edition_id, {})[klass] = int(n)  # type: ignore[arg-type]  # IN: not None
    return counts


def edition_rates(session: Session, edition_id: int, sending: SendingSettings, *,
                  states: dict[str, int] | None = None,
                  per_class: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts and rates of one edition. ``states``: its deliveries by state, when the caller
    has them (a sent edition's never change: the end of its send kept them); counted
    otherwise. ``per_class``: its :func:`class_counts`, when the caller counted them
    already (:func:`class_counts_of`).

    Keys: ``deliveries`` (all rows), ``answered`` (sent + bounced + failed), ``accepted``
    (sent); per class the number of deliveries with such a bounce (``hard``, ``soft``,
    ``policy``, ``complaints``, ``delayed``, ``autoreply``, ``unparsed``); the rates
    ``hard_bounce_rate``, ``soft_bounce_rate``, ``bounce_rate`` (hard + soft),
    ``policy_rate`` (over ``answered``) and ``complaint_rate`` (over ``accepted``), as
    fractions; and ``complaint_alert`` / ``complaint_stop``: the complaint rate reached
    ``complaint_alert_rate`` (0.1 %) / ``complaint_stop_rate`` (0.3 %) of ``sending``.
    """
    if states is None:
        states = {state: n for state, n in session.execute(
            select(Delivery.state, func.count()).where(Delivery.edition_id == edition_id)
            .group_by(Delivery.state)
        )}
    deliveries = sum(states.values())
    accepted = states.get(DeliveryState.sent, 0)
    answered = accepted + states.get(DeliveryState.bounced, 0) + states.get(DeliveryState.failed, 0)

    if per_class is None:
        per_class = class_counts(session, edition_id)
    hard = per_class.get(BounceClass.hard, 0)
    soft = per_class.get(BounceClass.soft, 0)
    policy = per_class.get(BounceClass.policy, 0)
    complaints = per_class.get(BounceClass.complaint, 0)
    complaint_rate = _rate(complaints, accepted)
    return {
        "edition_id": edition_id,
        "deliveries": deliveries,
        "answered": answered,
        "accepted": accepted,
        "hard": hard,
        "soft": soft,
        "policy": policy,
        "complaints": complaints,
        "delayed": per_class.get(BounceClass.delayed, 0),
        "autoreply": per_class.get(BounceClass.autoreply, 0),
        "unparsed": per_class.get(BounceClass.unparsed, 0),
        "hard_bounce_rate": _rate(hard, answered),
        "soft_bounce_rate": _rate(soft, answered),
        "bounce_rate": _rate(hard + soft, answered),
        "policy_rate": _rate(policy, answered),
        "complaint_rate": complaint_rate,
        "complaint_alert": accepted > 0 and complaint_rate >= sending.complaint_alert_rate,
        "complaint_stop": accepted > 0 and complaint_rate >= sending.complaint_stop_rate,
    }


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
