"""What Apicbase's OAuth endpoints answer, read into the layer's types: credentials presented,
token responses (a usable refresh token is always kept; odd fields are noted), introspections.

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

    @property
    def access_token_usable(self) -> bool:
        """False: stored all the same (for its refresh token), refreshed away before any use."""
        return bool(self.access_token)

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


def _usable(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LENGTH and is_token(value)


def parse_token_response(body: dict[str, Any] | None, received_at: float) -> TokenResponse:
    """A 2xx of the token endpoint. Any answer with a usable refresh token is kept, whatever else
    is odd: an access token that is missing, too long or not a token is kept as unusable ("",
    expiring at once, so the next use refreshes it away), an odd expires_in becomes the safe one.
    Without a refresh token the caller decides (a refresh keeps the one it presented, if the
    access token is usable; a code exchange has nothing to keep).

    Raises MalformedResponse when the answer holds no usable refresh token: the grant may have
    been carried out (a rotation), so the outcome is unknown and only the witness can tell.
    """
    if body is None:
        raise MalformedResponse("token response is not a JSON object")
    refresh_token = body.get("refresh_token")
    if refresh_token is None or refresh_token == "":
        refresh_token = None
    elif not _usable(refresh_token):
        raise MalformedResponse("token response field refresh_token is not a usable token")
    # Past this point a possibly rotated refresh token must be kept whatever else is odd (RFC 6749
    # only recommends expires_in), so oddities are noted, never fatal.
    oddities: list[str] = []
    given = body.get("access_token")
    access_token = given if isinstance(given, str) and _usable(given) else ""
    if not access_token:
        if refresh_token is None:
            raise MalformedResponse("token response has no usable access_token and no refresh_token")
        oddities.append("access_token_missing" if given in (None, "") else "access_token_unusable")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and re.fullmatch(r"[0-9]{1,12}", expires_in):  # not "²", not 5000 digits
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 0 < expires_in <= MAX_EXPIRES_IN:
        oddities.append("expires_in_missing" if expires_in is None else "expires_in_invalid")
        expires_in = SAFE_EXPIRES_IN
    if not access_token:
        expires_in = 0  # nothing to hand out: due for a refresh at once
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
