"""Reading API Gateway's events: payload 2.0 (the HttpApi), and 1.0 for the callback's optional
REST stage (the flood rule). What leaves here is a plain value, checked or None."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ..errors import ConfigurationError, InvalidRequest
from . import checks

_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


def route_key(event: Mapping[str, Any]) -> str:
    """API Gateway's route key; behind a catch-all ($default) route, the method and path. The
    optional REST stage of the flood rule sends payload 1.0: its method and resource."""
    if "httpMethod" in event:
        return f"{event['httpMethod']} {event.get('resource')}"
    key = str(event.get("routeKey") or "$default")
    if key != "$default":
        return key
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
    return f"{method} {event.get('rawPath')}"


def query_of(event: Mapping[str, Any]) -> dict[str, str]:
    """The query string as payload 2.0 gives it: a repeated key's values joined with commas (so a
    repeated state is no state), also from payload 1.0's multi-value form."""
    multi = event.get("multiValueQueryStringParameters")
    if multi:
        return {key: ",".join(values) for key, values in multi.items()}
    return event.get("queryStringParameters") or {}


def cookie(event: Mapping[str, Any], name: str) -> str | None:
    """The first cookie called ``name`` (payload 2.0 gives "name=value" strings, already split
    and trimmed by API Gateway). Its value is taken as it is: it is matched whole."""
    # Payload 1.0 (the flood rule's REST stage) carries them in the Cookie header instead.
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    items = event.get("cookies") or str(headers.get("cookie") or "").split(";")
    for item in items:
        key, _, value = str(item).partition("=")
        if key.strip() == name:
            return value
    return None


def path_id(raw: str) -> str:
    """A connection id from a path: API Gateway hands the handler the raw path, so a client that
    percent-encodes ':' means ':'."""
    try:
        return checks.connection_id(unquote(raw, errors="strict"))
    except UnicodeDecodeError:
        raise InvalidRequest("connection_id is not valid UTF-8", code="invalid_connection_id") from None


def redirect_uri(callback_url: str | None, request_domain: str | None) -> str:
    """The callback's URL: the configured one, else the callback on the admin request's own domain."""
    if callback_url:
        return callback_url
    if not request_domain or not _HOST_RE.fullmatch(request_domain):
        raise ConfigurationError("CALLBACK_URL is not set and the request has no usable domain name")
    return f"https://{request_domain}/oauth/callback"
