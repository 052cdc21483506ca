"""What Apicbase's OAuth endpoints answer, read into the layer's types: credentials presented,
token responses (a usable pair is always kept; odd fields are noted), introspections.

Nothing here logs a token, a code or a secret.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import MalformedResponse
from ..model import MAX_TOKEN_LENGTH, immutable, is_token

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
# A missing or odd expires_in: treat the token as short-lived, so it is refreshed again soon.
SAFE_EXPIRES_IN = 3600
DEFAULT_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class ClientCredentials:
    application: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # the secret must never reach a log line through repr()
        return f"ClientCredentials(application={self.application!r}, client_id={self.client_id!r})"


@immutable
class TokenResponse:
    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str | None
    received_at: float
    # What was odd but harmless (the pair is usable): named in an ERROR log line once stored.
    oddities: tuple[str, ...] = ()

    @property
    def expires_at(self) -> int:
        return int(self.received_at) + self.expires_in

    def __repr__(self) -> str:
        return f"TokenResponse(expires_in={self.expires_in}, scope={self.scope!r})"


@immutable
class Introspection:
    active: bool
    scope: str | None = None
    exp: int | None = None
    client_id: str | None = None
    username: str | None = None


def retry_after_seconds(value: str | None, now: float) -> float:
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True, float("²") fails
        return min(float(value), 3600.0)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return DEFAULT_RETRY_AFTER
    return min(max(when - now, 0.0), 3600.0)


def json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _token(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise MalformedResponse(f"token response has no {key}")
        return None
    if not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH or not is_token(value):
        raise MalformedResponse(f"token response field {key} is not a valid token")
    return value


def parse_token_response(body: dict[str, Any] | None, received_at: float) -> TokenResponse:
    if body is None:
        raise MalformedResponse("token response is not a JSON object")
    access_token = _token(body, "access_token", required=True)
    assert access_token is not None
    refresh_token = _token(body, "refresh_token", required=False)
    # Past this point the pair is usable: a possibly rotated refresh token must be kept whatever
    # else is odd (RFC 6749 only recommends expires_in), so oddities are noted, never fatal.
    oddities: list[str] = []
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and re.fullmatch(r"[0-9]{1,12}", expires_in):  # not "²", not 5000 digits
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 0 < expires_in <= MAX_EXPIRES_IN:
        oddities.append("expires_in_missing" if expires_in is None else "expires_in_invalid")
        expires_in = SAFE_EXPIRES_IN
    token_type = body.get("token_type")
    if token_type is not None and (not isinstance(token_type, str) or token_type.strip().lower() != "bearer"):
        oddities.append("token_type")
    scope = body.get("scope")
    if scope is not None and (not isinstance(scope, str) or len(scope) > 512):
        oddities.append("scope")
        scope = None
    return TokenResponse(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=expires_in,
        scope=scope,
        received_at=received_at,
        oddities=tuple(oddities),
    )
