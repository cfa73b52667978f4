"""Schemathesis against ``/api/v1/openapi.json`` (bounded): requests made from the API's
own description, valid and invalid, with a token that has every scope, against the test
web server on both databases. No answer is a 5xx, and every answer matches the schema
(status code, content type, body, headers); a valid request is accepted.

The operations are read from the live description and driven with Hypothesis directly
(``operation.as_strategy``): Schemathesis's pytest plugin (``from_fixture``) does not run
under this pytest (9.2)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from mailer.api_tokens.service import SCOPES
from tests.support.factories import make_edition
from tests.support.subscribers import make
from tests.test_api import token

EXAMPLES = 50  # per operation and mode


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_schema_and_none_is_a_5xx(clean, web, mode) -> None:
    for i in range(3):
        make(f"schema{i}@example.org", "confirmed")
    make_edition()  # edition 1, with articles: an id Hypothesis tends to try
    headers = {"Authorization": f"Bearer {token('schemathesis', *SCOPES, rate=100_000)}"}
    schema = schemathesis.openapi.from_url(f"{web.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /subscribers", "POST /subscribers", "POST /subscribers/import",
        "GET /subscribers/{public_id}",
        "PATCH /subscribers/{public_id}", "DELETE /subscribers/{public_id}",
        "POST /subscribers/{public_id}/unsubscribe", "GET /subscribers/{public_id}/export",
        "GET /suppressions", "POST /suppressions", "DELETE /suppressions/{address_hash}",
        "POST /articles/import", "GET /articles", "GET /articles/{article_id}",
        "GET /bounces", "GET /stats", "GET /lists", "GET /lists/{slug}",
        "GET /editions", "POST /editions",
        "GET /editions/{edition_id}", "PATCH /editions/{edition_id}",
        "GET /editions/{edition_id}/preview", "GET /editions/{edition_id}/progress",
        "POST /editions/{edition_id}/test", "POST /editions/{edition_id}/schedule",
        "DELETE /editions/{edition_id}/schedule", "POST /editions/{edition_id}/send",
        "POST /editions/{edition_id}/pause", "POST /editions/{edition_id}/resume",
        "POST /editions/{edition_id}/cancel",
        "GET /editions/{edition_id}/articles", "POST /editions/{edition_id}/articles",
        "DELETE /editions/{edition_id}/articles/{article_id}",
        "PATCH /editions/{edition_id}/articles/{article_id}",
        "POST /editions/{edition_id}/complaints/acknowledge"}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        # A sign-up's address is checked as the form checks it (email-validator: a real
        # domain, no non-ASCII before the @) and its names as the form does (no private-use
        # or unassigned code points): more than a JSON schema says, so a schema-valid
        # sign-up may rightly get a 422; so may a suppression's address, a name change, a
        # feed's address (it is fetched: an address made up is not found) and a test copy's.
        # An edition's times are checked against the calendar and the stored edition: a
        # schema-valid window may hold no article (a draft refused with a 422), end before
        # the edition's own start, or fall outside 2000-2999; a schedule's time may be in
        # the past. The send, pause, resume and cancel are not left out: a schema-valid one
        # is a 2xx, a 404 or a 409 (the state does not allow it), all accepted; edition 1 is
        # sent, paused, cancelled as Hypothesis finds it. Every other check runs on them.
        # An article list's since may be after its until; an article added to an edition
        # may not exist, a new position may be past the last: a 422 each, naming the field.
        # A sign-up's or an import's list may not exist (a 404 naming it).
        excluded = [positive_data_acceptance] if operation.label in (
            "POST /subscribers", "POST /subscribers/import", "POST /suppressions",
            "PATCH /subscribers/{public_id}",
            "POST /articles/import", "GET /articles", "POST /editions",
            "PATCH /editions/{edition_id}", "POST /editions/{edition_id}/test",
            "POST /editions/{edition_id}/schedule", "POST /editions/{edition_id}/articles",
            "PATCH /editions/{edition_id}/articles/{article_id}") else []
        # A negative case may be one whose only fault is a missing Authorization header,
        # which the token below puts back: "rejected" cannot be asked of it. The rejections
        # themselves (each wrong parameter and field a 422 naming it) are tests/test_api.py's.
        if mode == GenerationMode.NEGATIVE:
            excluded.append(negative_data_rejection)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def one(case) -> None:  # type: ignore[no-untyped-def]
            answer = case.call_and_validate(base_url=f"{web.url}/api/v1", headers=headers,
                                            excluded_checks=excluded)
            statuses.setdefault(operation.label, set()).add(answer.status_code)

        one()
    # The generated requests reached the routes, not only their validation.
    if mode == GenerationMode.POSITIVE:
        assert 200 in statuses["GET /subscribers"] and 202 in statuses["POST /subscribers"], \
            statuses
        assert 200 in statuses["GET /editions"], statuses
        assert 200 in statuses["GET /articles"], statuses
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
