"""Bearer tokens: who is calling, whether they may, and how often.

An unknown, expired or revoked token is a 401 (with ``WWW-Authenticate: Bearer`` and the
reason); a token without the route's scope is a 403; more requests in a minute than the
token's limit is a 429 with ``Retry-After``. The limit is counted per token in Redis, so it
holds across every web process."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailer.api_tokens import service
from mailer.api_tokens.service import Caller, Refusal
from mailer.db import transaction
from mailer.ratelimit import hit
from mailer.web.api.problems import ApiProblem

bearer = HTTPBearer(auto_error=False, description="An API token: `mailer tokens create`.")

_REFUSED = {
    Refusal.unknown: "This token is not known.",
    Refusal.expired: "This token has expired.",
    Refusal.revoked: "This token has been revoked.",
}


def _unauthorised(detail: str, error: str = "invalid_token") -> ApiProblem:
    return ApiProblem(401, detail, headers={
        "WWW-Authenticate": f'Bearer realm="mailer", error="{error}"'})


def require(scope: str) -> Callable[..., Caller]:
    """A dependency: the caller, once its token is valid, has ``scope`` and is within its
    limit. Runs in the thread pool (it reads the database)."""
    assert scope in service.SCOPES, scope

    def caller(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
        if credentials is None:
            raise ApiProblem(401, "An API token is needed: Authorization: Bearer <token>.",
                             headers={"WWW-Authenticate": 'Bearer realm="mailer"'})
        with transaction() as session:
            found = service.authenticate(session, credentials.credentials)
        if isinstance(found, Refusal):
            raise _unauthorised(_REFUSED[found])
        # Every request of a known token counts, those refused for their scope too.
        if not hit(f"api-token:{found.token_id}", found.rate_limit_per_minute, 60):
            raise ApiProblem(429, f"More than {found.rate_limit_per_minute} requests in a "
                             "minute with this token.", headers={"Retry-After": "60"})
        if scope not in found.scopes:
            raise ApiProblem(403, f"This token does not have the scope {scope}.")
        return found

    return caller
