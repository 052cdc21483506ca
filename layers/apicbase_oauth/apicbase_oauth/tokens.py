"""Use: a valid access token on demand, refreshed first when it expires within the demand margin.

A caller that meets another refresher's lease waits for that refresh (``wait_for_refresh``, the
one copy of that loop) rather than refreshing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .deps import Deps
from .errors import (
    ApicbaseError,
    DependencyUnavailable,
    NeedsReauthorization,
    RefreshInProgress,
    RefreshStillRunning,
)
from .freshness import (
    FRESH,
    NEEDS_REAUTHORIZATION_REASON,
    RATE_LIMITED,
    REJECTED,
    asked_to_wait,
    on_demand,
    should_refresh,
    still_serves,
)
from .model import AccessToken, Connection, TokenPair
from .observability import logger
from .refresh import refresh_connection

T = TypeVar("T")
# How long a caller waits for another caller's refresh before answering "try again".
WAIT_FOR_REFRESH_SECONDS = 5.0


def get_token(deps: Deps, connection_id: str) -> AccessToken:
    """A valid access token, refreshed on demand (single flight) when it expires within the margin."""
    return token_of(deps, deps.connections.get(connection_id))


def token_of(deps: Deps, connection: Connection) -> AccessToken:
    """``get_token`` for a connection the caller has just read (the proxy: one read per call)."""
    connection_id = connection.connection_id
    pair: TokenPair | None = None
    now = int(deps.now())
    refresh, reason = should_refresh(connection, now, on_demand(deps.settings))
    if reason == NEEDS_REAUTHORIZATION_REASON:
        raise NeedsReauthorization(connection_id)
    if reason == RATE_LIMITED and not still_serves(connection, now):
        raise asked_to_wait(connection, now)
    if refresh:  # while Apicbase asks to wait, the still valid token serves
        connection, pair = _refresh_on_demand(deps, connection)
    if pair is None:
        pair = deps.cipher.decrypt(connection_id, connection.tokens)
    return AccessToken(connection_id, pair.access_token, connection.expires_at, connection.scope)


def replace_rejected_token(deps: Deps, connection_id: str, rejected_token: str) -> AccessToken:
    """A token Apicbase just answered 401 to: refresh now unless another caller already replaced it."""
    current = get_token(deps, connection_id)
    if current.access_token != rejected_token:
        return current
    try:
        result = refresh_connection(deps, connection_id, REJECTED)
    except RefreshInProgress:
        # The other refresher replaces the token we were about to refresh.
        def replaced() -> AccessToken | None:
            token = get_token(deps, connection_id)
            return token if token.access_token != rejected_token else None

        return wait_for_refresh(deps, connection_id, replaced)
    if result.tokens is not None:
        connection = result.connection
        return AccessToken(connection_id, result.tokens.access_token, connection.expires_at, connection.scope)
    # Superseded or rotated elsewhere: the stored token is the newer one.
    return get_token(deps, connection_id)


def wait_for_refresh(deps: Deps, connection_id: str, check: Callable[[], T | None]) -> T:
    """Call ``check`` after growing pauses until it answers, for at most WAIT_FOR_REFRESH_SECONDS."""
    waited, delay = 0.0, 0.1
    while waited < WAIT_FOR_REFRESH_SECONDS:
        deps.sleep(delay)
        waited += delay
        delay = min(delay * 2, 1.0)
        answer = check()
        if answer is not None:
            return answer
    raise RefreshStillRunning(f"connection {connection_id} is being refreshed; try again in a few seconds")


def _refresh_on_demand(deps: Deps, connection: Connection) -> tuple[Connection, TokenPair | None]:
    connection_id, purpose = connection.connection_id, on_demand(deps.settings)

    def refreshed() -> tuple[Connection, TokenPair | None] | None:
        try:
            result = refresh_connection(deps, connection_id, purpose)
        except RefreshInProgress:
            return None
        return result.connection, result.tokens

    def fresh_or_refreshed() -> tuple[Connection, TokenPair | None] | None:
        latest = deps.connections.get(connection_id)
        return (latest, None) if should_refresh(latest, int(deps.now()), purpose)[1] == FRESH else refreshed()

    try:
        # Someone else refreshing: wait briefly for their result rather than refresh twice.
        return refreshed() or wait_for_refresh(deps, connection_id, fresh_or_refreshed)
    except (ApicbaseError, DependencyUnavailable):
        # The refresh failed, but a token that is still valid is still useful.
        if still_serves(connection, int(deps.now())):
            logger.warning("on-demand refresh failed; returning the current token", connection_id=connection_id)
            return connection, None
        raise
