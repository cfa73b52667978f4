"""A delivery's states and the moves between them, declared in one place.

A row is written ``queued`` when the audience freezes. A sender claims it (``sending``)
and records the SMTP reply (``sent``, ``deferred``, ``failed``, ``bounced``) or gives the
claim back; a queued row whose reader left is ``skipped``; a ``deferred`` one is queued
again when due; cancelling the edition cancels what is waiting. The five final states are
never left.

The statements that move deliveries are written for speed where they run (the batch's
ledger, the sweeper, the holders, the sending service) and are not built from this table;
``tests/test_delivery_states.py`` reads each of them and fails if one writes a move the
table does not allow.
"""

from __future__ import annotations

from mailer.deliveries.models import FINAL_STATES, OPEN_STATES, DeliveryState

D = DeliveryState

#: Every state a delivery starts in: the freeze of the audience writes ``queued`` rows.
INITIAL = D.queued

#: From each state, the states a delivery may move to.
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    # claimed by a sender; skipped (the reader left); the rest of a batch deferred (the
    # SMTP server is down); cancelled with the edition
    D.queued: frozenset({D.sending, D.skipped, D.deferred, D.cancelled}),
    # the SMTP reply recorded; or the claim given back (paused, cancelled, SMTP down, its
    # holder gone)
    D.sending: frozenset({D.sent, D.deferred, D.failed, D.bounced, D.queued, D.cancelled}),
    # due again (the sweeper); cancelled with the edition
    D.deferred: frozenset({D.queued, D.cancelled}),
    **{state: frozenset() for state in FINAL_STATES},
}

__all__ = ["FINAL_STATES", "INITIAL", "OPEN_STATES", "TRANSITIONS", "allowed"]


def allowed(from_state: str, to_state: str) -> bool:
    """Whether a delivery that is ``from_state`` may become ``to_state``."""
    return DeliveryState(to_state) in TRANSITIONS[DeliveryState(from_state)]
