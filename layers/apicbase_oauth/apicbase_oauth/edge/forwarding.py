"""The proxy route's HTTP edge (``ANY /connections/{id}/apicbase/{path}``, payload 2.0).

- The path is checked, decoded once, and re-encoded: what is checked is what is sent. Dot
  segments, backslashes, control characters, a scheme or another host are refused with 400.
- Only an allow-list of request headers passes to Apicbase: never the caller's Authorization,
  cookies, hop-by-hop or X-Amz-* headers.
- Apicbase's answer goes back as text when it is text, else base64; one too large for a Lambda
  response is a 502.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import InvalidRequest, ResponseTooLarge
from ..proxy import MAX_RESPONSE_BYTES, ProxyRequest, ProxyResponse
from .gateway import path_id

# Per call, so one C-level search each rather than a Python loop over the characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_BREAK = re.compile(r"[\x00-\x1f]")
_QUERY_REFUSED = re.compile(r'[\x00-\x20\x7f-\U0010ffff#"<>\\^`{|}]')

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
MAX_PATH_LENGTH = 2048
MAX_QUERY_LENGTH = 8192
# RFC 3986 pchar less '%', plus '/': the characters a re-encoded path keeps as they are.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_FIRST_SEGMENTS_REFUSED = frozenset({"oauth"})  # the OAuth endpoints are the broker's business


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


ROUTE_PREFIX = "/connections/"
ROUTE_INFIX = "/apicbase/"
# Bodies of these types go back as text; anything else base64-encoded.
TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")


def request_from_event(event: Mapping[str, Any], api_url: str) -> ProxyRequest:
    """The proxy route's event as a checked request. The path is read from ``rawPath``: exactly
    what the caller sent, still percent-encoded."""
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
    return ProxyRequest(path_id(raw_id), method, url, forwarded_headers(event.get("headers") or {}), body)


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
