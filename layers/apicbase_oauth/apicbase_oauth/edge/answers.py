"""The HTTP edge shared by the callback and the admin API: statuses, request fields, JSON views.

Use cases take typed arguments and return model objects; this module is where HTTP meets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import (
    ApicbaseError,
    ApicbaseTimeout,
    ApicbaseUnavailable,
    AuthorizationDenied,
    BrokerError,
    ConnectionNotFound,
    DependencyUnavailable,
    InvalidGrant,
    InvalidRequest,
    InvalidState,
    NeedsReauthorization,
    OutOfTime,
    OverBudget,
    RateLimited,
    RefreshInProgress,
    RefreshStillRunning,
    UnknownApplication,
)
from ..model import AccessToken, Connection, RefreshResult, StartedSession

if TYPE_CHECKING:  # annotations only: the callback imports this module, and needs no admin flow
    from ..adapters.apicbase import Introspection
    from ..admin import ConnectionPage, Disconnection

# The most specific class in an error's MRO decides; anything else is a 500.
_STATUS: dict[type[BrokerError], int] = {
    InvalidRequest: 400,
    InvalidState: 400,
    AuthorizationDenied: 400,
    InvalidGrant: 400,
    UnknownApplication: 400,
    ConnectionNotFound: 404,
    NeedsReauthorization: 409,
    RefreshInProgress: 409,
    RefreshStillRunning: 503,
    ApicbaseError: 502,
    RateLimited: 503,
    ApicbaseUnavailable: 503,
    DependencyUnavailable: 503,
    OutOfTime: 503,
    OverBudget: 429,
    ApicbaseTimeout: 504,
}


def status_of(error: BrokerError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


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


def flag(value: str | None, name: str) -> bool:
    if value in (None, "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise InvalidRequest(f"{name} must be true or false", code=f"invalid_{name}")


def iso(epoch: int | float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def connection_view(connection: Connection) -> dict[str, Any]:
    """What the admin API shows of a connection: everything but the tokens."""
    return {
        "connection_id": connection.connection_id,
        "application": connection.application,
        "client_id": connection.client_id,
        "status": connection.status,
        "scope": connection.scope,
        "username": connection.username,
        "library": connection.library,
        "expires_at": iso(connection.expires_at),
        "created_at": iso(connection.created_at),
        "updated_at": iso(connection.updated_at),
        "last_refresh_at": iso(connection.last_refresh_at),
        "refresh_count": connection.refresh_count,
        "consecutive_failures": connection.consecutive_failures,
        "next_attempt_at": iso(connection.next_attempt_at),
        "last_error": connection.last_error,
        "reauthorization_reason": connection.reauthorization_reason,
        "source": connection.source,
        "version": connection.version,
    }


def introspection_view(result: Introspection) -> dict[str, Any]:
    return {
        "active": result.active,
        "scope": result.scope,
        "exp": iso(result.exp),
        "client_id": result.client_id,
        "username": result.username,
    }


def page_view(page: ConnectionPage) -> dict[str, Any]:
    return {
        "connections": [
            {
                "connection_id": s.connection_id,
                "status": s.status,
                "application": s.application,
                "scope": s.scope,
                "username": s.username,
                "updated_at": iso(s.updated_at),
            }
            for s in page.connections
        ],
        "next_cursor": page.next_cursor,
    }


def session_view(started: StartedSession) -> dict[str, Any]:
    """Where to send the person: ``connect_url``, and nothing else. The authorize URL and the
    state are left out: a browser sent straight to Apicbase could never finish (the
    callback needs the cookie that only connect_url sets), and the state need not leave the
    broker except through Apicbase."""
    return {
        "connect_url": started.connect_url,
        "expires_at": iso(started.expires_at),
        "connection_id": started.connection_id,
        "redirect_uri": started.redirect_uri,
        "scopes": list(started.scopes),
        "expected_username": started.expected_username,
    }


def disconnection_view(result: Disconnection) -> dict[str, Any]:
    return {
        "connection_id": result.connection.connection_id,
        "disconnected": True,
        "revoked": result.revoked,
        "revocation": result.revocation,
        "revocation_error": result.revocation_error,
    }


def token_view(token: AccessToken, now: float) -> dict[str, Any]:
    return {
        "connection_id": token.connection_id,
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_at": iso(token.expires_at),
        "expires_in": max(token.expires_at - int(now), 0),
        "scope": token.scope,
    }


def refresh_view(result: RefreshResult) -> dict[str, Any]:
    return {**connection_view(result.connection), "outcome": result.outcome}
