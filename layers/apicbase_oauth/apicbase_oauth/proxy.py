"""Use through the broker: a request forwarded to Apicbase's API with the connection's token.

``ANY /connections/{id}/apicbase/{path}``: consumers call Apicbase with nothing but
execute-api:Invoke; no token reaches them. Per request, warm: one GetItem (the connection, read
once for the budget's user and the token), one UpdateItem (the budget), then Apicbase.

- A 401 from Apicbase (django-oauth-toolkit deletes the old access token on every refresh)
  replaces the token once (``tokens.replace_rejected_token``: the same single flight as every
  refresh) and retries once; a second 401 is passed on. A 401 is not counted by Apicbase's
  per-user limit (it has no user), so the retry spends no second budget unit.
- The budget (``adapters.budget``) answers 429 with Retry-After before Apicbase would; Apicbase's
  own 429 is passed on with its Retry-After.
- Only an allow-list of headers passes either way: never the caller's Authorization, cookies,
  hop-by-hop or X-Amz-* headers. Bodies are forwarded as bytes and never logged.
- The path is checked, decoded once, and re-encoded: what is checked is what is sent. Dot
  segments, backslashes, control characters, a scheme or another host are refused with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from . import tokens
from .adapters.apicbase_api import ApicbaseApi, ApiResponse
from .adapters.budget import RequestBudget, spender
from .deps import Deps
from .errors import InvalidRequest, OverBudget, ResponseTooLarge
from .model import immutable
from .observability import logger, metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request headers that pass to Apicbase (lower case); anything else stays here.
FORWARDED_REQUEST_HEADERS = (
    "content-type",
    "accept",
    "accept-language",
    "if-none-match",
    "if-match",
    "if-modified-since",
    "if-unmodified-since",
)
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
MAX_PATH_LENGTH = 2048
MAX_QUERY_LENGTH = 8192
# RFC 3986 pchar less '%', plus '/': the characters a re-encoded path keeps as they are.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_FIRST_SEGMENTS_REFUSED = frozenset({"oauth"})  # the OAuth endpoints are the broker's business
# Per call, so one C-level search each rather than a Python loop over the characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_BREAK = re.compile(r"[\x00-\x1f]")
_QUERY_REFUSED = re.compile(r'[\x00-\x20\x7f-\U0010ffff#"<>\\^`{|}]')


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


def target_url(api_url: str, raw_path: str, raw_query: str) -> str:
    """The URL of Apicbase's API for ``raw_path`` (as the caller sent it, percent-encoded) and
    ``raw_query`` (passed on unchanged), or InvalidRequest ``invalid_path``."""
    if len(raw_path) > MAX_PATH_LENGTH or len(raw_query) > MAX_QUERY_LENGTH:
        raise _bad_path("the path or the query string is too long")
    try:
        path = unquote(raw_path, errors="strict")
        path.encode("utf-8")  # lone surrogates (JSON's "\udc80") are not text either
    except UnicodeError:
        raise _bad_path("the path is not valid UTF-8") from None
    if not path or _CONTROL.search(path) or "\\" in path:
        raise _bad_path("the path is empty or holds control characters or backslashes")
    segments = path.split("/")
    if path.startswith("/") or ":" in segments[0]:
        raise _bad_path("name a path of Apicbase's API, not a URL")
    if {".", ".."} & set(segments) or "" in segments[:-1]:
        raise _bad_path("the path has dot or empty segments")
    if segments[0].lower() in _FIRST_SEGMENTS_REFUSED:
        raise _bad_path("the OAuth endpoints are not served through the proxy")
    if _QUERY_REFUSED.search(raw_query):
        raise _bad_path("the query string holds characters that must be percent-encoded")
    base = urlsplit(api_url)
    joined = base.path.rstrip("/") + "/" + quote(path, safe=_PATH_SAFE)
    url = urlunsplit((base.scheme, base.netloc, joined, raw_query, ""))
    again = urlsplit(url)
    if (again.scheme, again.netloc) != (base.scheme, base.netloc) or not again.path.startswith(base.path):
        raise _bad_path("the path leaves Apicbase's API")
    return url


def _bad_path(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_path")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers that Apicbase may see (payload 2.0 lower-cases names)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return {
        name: lowered[name]
        for name in FORWARDED_REQUEST_HEADERS
        # A value that could split a header line is not forwarded at all.
        if name in lowered and isinstance(lowered[name], str) and not _HEADER_BREAK.search(lowered[name])
    }


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
        try:
            self.budget.spend(spender(username=connection.username, connection_id=connection_id))
        except OverBudget:
            metrics.add_metric(name="ProxyOverBudget", unit="Count", value=1)
            raise
        token = tokens.token_of(deps, connection)  # the connection just read: no second GetItem
        answer = self._send(request, token.access_token)
        retried = False
        if answer.status == 401:
            # Revoked by a refresh elsewhere (DOT deletes the old access token), or expired early.
            newer = tokens.replace_rejected_token(deps, connection_id, token.access_token)
            answer, retried = self._send(request, newer.access_token), True
            metrics.add_metric(name="ProxyRetriedAfter401", unit="Count", value=1)
        if answer.status == 429:
            # Apicbase's own limit, despite the budget: several brokers, or a minute's turn.
            metrics.add_metric(name="ApicbaseThrottled", unit="Count", value=1)
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


# --- the HTTP edge of the route (API Gateway payload 2.0) ---------------------------------------
ROUTE_PREFIX = "/connections/"
ROUTE_INFIX = "/apicbase/"
# Bodies of these types go back as text; anything else base64-encoded.
TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")


def request_from_event(event: Mapping[str, Any], api_url: str) -> tuple[str, str, str, dict[str, str], bytes]:
    """(raw connection id, method, target URL, forwarded headers, body) of a proxy route's event.
    The path is read from ``rawPath``: exactly what the caller sent, still percent-encoded."""
    raw_path = str(event.get("rawPath") or "")
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "").upper()
    raw_id, infix, rest = raw_path.removeprefix(ROUTE_PREFIX).partition(ROUTE_INFIX)
    if not raw_path.startswith(ROUTE_PREFIX) or not infix or "/" in raw_id:
        raise _bad_path("the path is not /connections/{id}/apicbase/{path}")
    if method not in METHODS:
        raise InvalidRequest(f"the method must be one of {', '.join(sorted(METHODS))}", code="invalid_method")
    url = target_url(api_url, rest, str(event.get("rawQueryString") or ""))
    raw_body = event.get("body") or ""
    try:
        body = base64.b64decode(raw_body, validate=True) if event.get("isBase64Encoded") else raw_body.encode()
    except (binascii.Error, ValueError):
        raise InvalidRequest("the request body is not valid base64", code="invalid_body") from None
    return raw_id, method, url, forwarded_headers(event.get("headers") or {}), body


def lambda_answer(response: ProxyResponse, *, head: bool = False) -> dict[str, Any]:
    """The payload 2.0 answer: text as text, anything else base64; too large for Lambda, a 502."""
    body = b"" if head else response.body
    content_type = response.headers.get("Content-Type", "").lower()
    text: str | None = None
    if not body or any(kind in content_type for kind in TEXT_TYPES):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    encoded = text if text is not None else base64.b64encode(body).decode("ascii")
    # JSON escapes can grow text up to six times; measure only when that could matter.
    worst = len(encoded) * (6 if text is not None else 1)
    if worst > MAX_RESPONSE_BYTES and len(json.dumps(encoded)) > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(
            f"Apicbase's answer is larger than {MAX_RESPONSE_BYTES // 1_000_000} MB, more than a Lambda "
            "response holds; ask for smaller pages"
        )
    return {
        "statusCode": response.status,
        "headers": response.headers,
        "body": encoded,
        "isBase64Encoded": text is None,
    }


def build(deps: Deps) -> Proxy:
    settings = deps.settings
    return Proxy(
        deps,
        ApicbaseApi(max_body_bytes=MAX_RESPONSE_BYTES),
        RequestBudget(deps.connections.table, per_minute=settings.api_budget_per_minute, now=deps.now),
    )
