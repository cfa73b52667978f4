"""The staff desk at /admin: server-rendered pages over the domain services.

- ``auth``: logging in and out, sessions, CSRF, who may do what;
- ``articles``: the newest articles; importing more from a file or a feed address;
- ``editions``: the list, draft, edit, choose and order the articles, preview;
- ``edition_sending``: test copies, schedule, send, pause, resume, cancel, watch;
- ``lists``: the lists with their counts; a new one; one list's settings; archive;
- ``subscribers``: search, consent history, import, export, erase, the suppression list;
- ``bounces``: the latest bounces with their evidence;
- ``insight``: an edition after its send, the list over time, deliverability (charts);
- ``ops``: queues, workers, sends under way, alerts; the audit log;
- ``account``: the staff member's own second factor (TOTP) and recovery codes;
- ``tokens``: the API's tokens: list, create (shown once), revoke;
- ``webhooks``: outgoing webhook endpoints (secret shown once), their delivery log, redeliver;
- ``topics``: a list's topics (its articles' categories): rename, merge, hide.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from mailer.web.admin import (
    account,
    articles,
    auth,
    bounces,
    edition_sending,
    editions,
    insight,
    lists,
    ops,
    subscribers,
    tokens,
    topics,
    webhooks,
)

#: Every router of the admin (the phone-width test visits each of their pages).
MODULES = (auth, articles, editions, edition_sending, insight, lists, subscribers, bounces,
           ops, account, tokens, webhooks, topics)


def install(app: FastAPI) -> None:
    for module in MODULES:
        app.include_router(module.router)

    @app.exception_handler(auth.AdminRefusal)
    async def _refused(request: Request, exc: auth.AdminRefusal) -> Response:
        return auth.refusal_response(request, exc)
