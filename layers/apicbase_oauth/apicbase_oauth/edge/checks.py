"""Checks for every value that comes from outside: ids, codes, states, scopes, URLs, tokens.

Every pattern is matched whole (``fullmatch``): ``re.match(...$)`` would accept a trailing newline.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import is_allowed_url, parse_scopes
from ..errors import InvalidRequest
from ..model import MAX_TOKEN_LENGTH, REDIRECT_ERRORS, is_connection_id, is_token

# Our states are secrets.token_urlsafe(32): 43 URL-safe characters.
STATE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
# Authorization codes: printable ASCII without spaces, bounded.
CODE_RE = re.compile(r"[\x21-\x7e]{1,512}")
APPLICATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_URL_LENGTH = 2048


def is_state(value: str) -> bool:
    return STATE_RE.fullmatch(value) is not None


def connection_id(value: Any) -> str:
    if not isinstance(value, str) or not is_connection_id(value):
        raise InvalidRequest(
            "connection_id must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
            code="invalid_connection_id",
        )
    return value


def application(value: Any) -> str:
    if value is None:
        return "default"
    if not isinstance(value, str) or not APPLICATION_RE.fullmatch(value):
        raise InvalidRequest("application must be 1-64 letters, digits, '.', '_' or '-'", code="invalid_application")
    return value


def scopes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
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


def expected_username(value: Any) -> str | None:
    """Who must sign in to Apicbase (compared exactly with the introspected username)."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 254 or not value.isprintable() or value.strip() != value:
        raise InvalidRequest(
            "expected_username must be 1-254 printable characters, without leading or trailing spaces",
            code="invalid_expected_username",
        )
    return value


def authorization_code(value: Any) -> str:
    if not isinstance(value, str) or not CODE_RE.fullmatch(value):
        raise InvalidRequest("code must be the authorization code Apicbase showed", code="invalid_code")
    return value


def token(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH or not is_token(value):
        raise InvalidRequest(f"{name} must be a non-empty token string", code=f"invalid_{name}")
    return value


def expires_in(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10 * 365 * 24 * 3600:
        raise InvalidRequest("expires_in must be a positive whole number of seconds", code="invalid_expires_in")
    return value


def whole_number(value: str, *, name: str, low: int, high: int) -> int:
    """ASCII digits only: ``str.isdigit`` accepts '²' and '٣', which ``int`` then rejects or reads."""
    if not (value.isascii() and value.isdigit() and len(value) <= 6) or not low <= int(value) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}", code=f"invalid_{name}")
    return int(value)


def issued(value: str | None) -> str | None:
    """A one-time value shaped as we issue them (a state, a start id, a binder), else None."""
    return value if value is not None and is_state(value) else None


def code_or_none(value: str | None) -> str | None:
    """The callback's authorization code, or None when it is absent or not one."""
    return value if value is not None and CODE_RE.fullmatch(value) else None


def redirect_error(value: str | None) -> str | None:
    """The callback's ``error``: one of OAuth's codes, else ``authorization_failed`` (never the
    value itself, which is reflected in pages and logs)."""
    if value is None:
        return None
    return value if value in REDIRECT_ERRORS else "authorization_failed"
