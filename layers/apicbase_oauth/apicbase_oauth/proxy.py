"""Use through the broker: a request forwarded to Apicbase's API with the connection's token.

``ANY /connections/{id}/apicbase/{path}``: consumers call Apicbase with nothing but
execute-api:Invoke; no token reaches them. Per request, warm: one GetItem (the connection, read
once for the budget's user and the token), one UpdateItem (the budget), then Apicbase.

- A 401 from Apicbase (django-oauth-toolkit deletes the old access token on every refresh)
  replaces the token once (``tokens.replace_rejected_token``: the same single flight as every
  refresh) and retries once; a second 401 is passed on, and that new token is not refreshed for a
  401 again for a while (``tokens.REFUSED_TOKEN_SECONDS``): Apicbase refuses the resource, not the
  token. A 401 is not counted by Apicbase's per-user limit (it has no user), so the retry spends
  no second budget unit.
- The budget (``adapters.budget``) answers 429 with Retry-After before Apicbase would; Apicbase's
  own 429 is passed on with its Retry-After, and gives its unit back. A connection that cannot
  serve a token (needs reauthorization) spends none.
- Only an allow-list of headers passes either way (the request's at the edge,
  ``edge.forwarding``, which also checks the path and builds the Lambda answer). Bodies are
  forwarded as bytes and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import field

from . import tokens
from .adapters.apicbase_api import ApicbaseApi, ApiResponse
from .adapters.budget import RequestBudget, spender
from .deps import Deps
from .errors import OverBudget
from .model import immutable
from .observability import logger, metrics

# Response headers that pass back to the caller.
PASSED_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Language",
    "ETag",
    "Last-Modified",
    "Retry-After",
    "Location",
    "Cache-Control",
    "WWW-Authenticate",
)
# Lambda's response is at most 6 MB of JSON; the body must leave room for the rest.
MAX_RESPONSE_BYTES = 5_000_000


@immutable
class ProxyRequest:
    connection_id: str
    method: str
    url: str  # checked: on the API's scheme and host, under its base path
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@immutable
class ProxyResponse:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)
    retried: bool = False


def passed_headers(answer: ApiResponse) -> dict[str, str]:
    headers = {name: answer.headers[name] for name in PASSED_RESPONSE_HEADERS if name in answer.headers}
    headers.setdefault("Cache-Control", "no-store")
    return headers


class Proxy:
    def __init__(self, deps: Deps, api: ApicbaseApi, budget: RequestBudget) -> None:
        self.deps = deps
        self.api = api
        self.budget = budget

    def forward(self, request: ProxyRequest) -> ProxyResponse:
        deps, connection_id = self.deps, request.connection_id
        started = time.monotonic()
        connection = deps.connections.get(connection_id)
        # The token first: a connection that needs reauthorization (or has none to serve) spends
        # nothing of its user's budget.
        token = tokens.token_of(deps, connection)  # the connection just read: no second GetItem
        try:
            counted = self.budget.spend(spender(username=connection.username, connection_id=connection_id))
        except OverBudget:
            metrics.add_metric(name="ProxyOverBudget", unit="Count", value=1)
            raise
        answer = self._send(request, token.access_token)
        retried = False
        if answer.status == 401 and not token.refused:
            # Revoked by a refresh elsewhere (DOT deletes the old access token), or expired early.
            newer = tokens.replace_rejected_token(deps, connection_id, token.access_token)
            answer, retried = self._send(request, newer.access_token), True
            metrics.add_metric(name="ProxyRetriedAfter401", unit="Count", value=1)
            if answer.status == 401:
                # A token just issued refused too: Apicbase refuses the resource, not the token.
                tokens.refused_after_refresh(deps, newer)
        if answer.status == 429:
            # Apicbase's own limit, despite the budget: several brokers, or a minute's turn. It
            # served nothing, so the unit goes back: the caller's retry is the one that costs.
            metrics.add_metric(name="ApicbaseThrottled", unit="Count", value=1)
            self.budget.give_back(counted)
        logger.info(
            "proxied to Apicbase",
            connection_id=connection_id,
            method=request.method,
            status=answer.status,
            retried=retried,
            response_bytes=len(answer.body),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return ProxyResponse(answer.status, passed_headers(answer), answer.body, retried)

    def _send(self, request: ProxyRequest, token: str) -> ApiResponse:
        return self.api.send(request.method, request.url, token=token, headers=request.headers, body=request.body)


def build(deps: Deps) -> Proxy:
    settings = deps.settings
    return Proxy(
        deps,
        ApicbaseApi(max_body_bytes=MAX_RESPONSE_BYTES),
        RequestBudget(deps.connections.table, per_minute=settings.api_budget_per_minute, now=deps.now),
    )
