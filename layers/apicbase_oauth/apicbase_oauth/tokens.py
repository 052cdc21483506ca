"""Use: a valid access token on demand, refreshed first when it expires within the leeway.

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
    RateLimited,
    RefreshInProgress,
    RefreshStillRunning,
)
from .model import NEEDS_REAUTHORIZATION, AccessToken, Connection, TokenPair
from .observability import logger
from .recovery import rate_limited_for
from .refresh import refresh_connection

T = TypeVar("T")
# A token that expires later than this is still worth handing out when a refresh cannot happen.
STILL_VALID_SECONDS = 30
# How long a caller waits for another caller's refresh before answering "try again".
WAIT_FOR_REFRESH_SECONDS = 5.0


def get_token(deps: Deps, connection_id: str) -> AccessToken:
    """A valid access token, refreshed on demand (single flight) when it expires within the leeway."""
    return token_of(deps, deps.store.get(connection_id))


def token_of(deps: Deps, connection: Connection) -> AccessToken:
    """``get_token`` for a connection the caller has just read (the proxy: one read per call)."""
    connection_id = connection.connection_id
    if connection.status == NEEDS_REAUTHORIZATION:
        raise NeedsReauthorization(f"connection {connection_id} needs to be connected again")
    pair: TokenPair | None = None
    now = int(deps.now())
    if connection.expires_at - now <= deps.settings.token_leeway_seconds:
        wait = rate_limited_for(connection, now)
        if wait and connection.expires_at - now <= STILL_VALID_SECONDS:
            raise RateLimited(
                f"Apicbase asked to wait before connection {connection_id} is refreshed", retry_after=wait
            )
        if not wait:  # while Apicbase asks to wait, the still valid token serves
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
        result = refresh_connection(deps, connection_id, min_validity=0, force=True)
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
    connection_id, leeway = connection.connection_id, deps.settings.token_leeway_seconds

    def refreshed() -> tuple[Connection, TokenPair | None] | None:
        try:
            result = refresh_connection(deps, connection_id, min_validity=leeway)
        except RefreshInProgress:
            return None
        return result.connection, result.tokens

    def fresh_or_refreshed() -> tuple[Connection, TokenPair | None] | None:
        latest = deps.store.get(connection_id)
        return (latest, None) if latest.expires_at - int(deps.now()) > leeway else refreshed()

    try:
        # Someone else refreshing: wait briefly for their result rather than refresh twice.
        return refreshed() or wait_for_refresh(deps, connection_id, fresh_or_refreshed)
    except (ApicbaseError, DependencyUnavailable):
        # The refresh failed, but a token that is still valid is still useful.
        if connection.expires_at - int(deps.now()) > STILL_VALID_SECONDS:
            logger.warning("on-demand refresh failed; returning the current token", connection_id=connection_id)
            return connection, None
        raise
