"""Checks for everything that comes from outside: ids, codes, states, bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .apicbase import MAX_TOKEN_LENGTH, TOKEN_RE
from .config import is_allowed_url, parse_scopes
from .errors import InvalidRequest

# Letters, digits and . _ : - ; starts with a letter or digit; at most 128 characters.
CONNECTION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Our states are secrets.token_urlsafe(32): 43 URL-safe characters.
STATE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# Authorization codes: printable ASCII without spaces, bounded.
CODE_RE = re.compile(r"^[\x21-\x7e]{1,512}$")
APPLICATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_URL_LENGTH = 2048


def connection_id(value: Any) -> str:
    if not isinstance(value, str) or not CONNECTION_ID_RE.match(value):
        raise InvalidRequest(
            "connection_id must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
            code="invalid_connection_id",
        )
    return value


def application(value: Any) -> str:
    if value is None:
        return "default"
    if not isinstance(value, str) or not APPLICATION_RE.match(value):
        raise InvalidRequest("application must be 1-64 letters, digits, '.', '_' or '-'", code="invalid_application")
    return value


def scopes(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, (str, list)) or (isinstance(value, list) and not all(isinstance(s, str) for s in value)):
        raise InvalidRequest("scopes must be a list of strings or a space-separated string", code="invalid_scope")
    try:
        return parse_scopes(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_scope") from None


def return_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH or not is_allowed_url(value):
        raise InvalidRequest("return_url must be an https URL (http only on 127.0.0.1)", code="invalid_return_url")
    return value


def authorization_code(value: Any) -> str:
    if not isinstance(value, str) or not CODE_RE.match(value):
        raise InvalidRequest("code must be the authorization code Apicbase showed", code="invalid_code")
    return value


def token(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH or not TOKEN_RE.match(value):
        raise InvalidRequest(f"{name} must be a non-empty token string", code=f"invalid_{name}")
    return value


def expires_in(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10 * 365 * 24 * 3600:
        raise InvalidRequest("expires_in must be a positive whole number of seconds", code="invalid_expires_in")
    return value


def body_fields(body: Any, *, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    """A JSON object with exactly the allowed fields: unknown fields are a client's bug."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    unknown = set(body) - required - optional
    if unknown:
        names = ", ".join(sorted(str(name)[:40] for name in unknown)[:5])
        raise InvalidRequest(f"unknown field(s): {names}", code="unknown_field")
    missing = required - set(body)
    if missing:
        raise InvalidRequest(f"missing field(s): {', '.join(sorted(missing))}", code="missing_field")
    return body
