"""Use: a valid access token on demand, refreshed first when it expires within the demand margin.

A caller that meets another refresher's lease waits for that refresh (``wait_for_refresh``, the
one copy of that loop) rather than refreshing twice. The access token of a connection with a lease
is never handed out as it is: the refresh under way may have had it deleted at Apicbase (and its
pair parked), so the lease is waited for, or the parked pair applied (``_settled``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .custody import apply_parked
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
# A 401 for a token just refreshed because of a 401 means Apicbase refuses the resource, not the
# token: that token is not refreshed again for a 401 for this long (a path that always answers 401
# costs one rotation per this many seconds, not one per call).
REFUSED_TOKEN_SECONDS = 600
# How long a caller waits for another caller's refresh before answering "try again".
WAIT_FOR_REFRESH_SECONDS = 5.0


def get_token(deps: Deps, connection_id: str) -> AccessToken:
    """A valid access token, refreshed on demand (single flight) when it expires within the margin."""
    return token_of(deps, deps.connections.get(connection_id))


def token_of(deps: Deps, connection: Connection) -> AccessToken:
    """``get_token`` for a connection the caller has just read (the proxy: one read per call)."""
    connection_id = connection.connection_id
    if connection.lease_until is not None:
        connection = _settled(deps, connection)
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
    return _token(connection, pair.access_token, int(deps.now()))


def _token(connection: Connection, access_token: str, now: int) -> AccessToken:
    refused = connection.refused_version == connection.version and (connection.refused_until or 0) > now
    return AccessToken(
        connection.connection_id,
        access_token,
        connection.expires_at,
        connection.scope,
        generation=connection.generation,
        version=connection.version,
        refused=refused,
    )


def replace_rejected_token(deps: Deps, connection_id: str, rejected_token: str) -> AccessToken:
    """A token Apicbase just answered 401 to: refresh now unless another caller already replaced it."""
    current = get_token(deps, connection_id)
    if current.access_token != rejected_token or current.refused:
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
        return _token(result.connection, result.tokens.access_token, int(deps.now()))
    # Superseded or rotated elsewhere: the stored token is the newer one.
    return get_token(deps, connection_id)


def refused_after_refresh(deps: Deps, token: AccessToken) -> None:
    """Apicbase answered 401 to ``token``, which had just replaced a token it answered 401 to: it
    refuses the resource, not the token. Remembered for REFUSED_TOKEN_SECONDS (best effort)."""
    try:
        deps.connections.remember_refused(
            token.connection_id,
            generation=token.generation,
            version=token.version,
            until=int(deps.now()) + REFUSED_TOKEN_SECONDS,
        )
    except DependencyUnavailable:
        logger.warning("refused token not remembered", connection_id=token.connection_id)


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
    raise _still_running(connection_id)


def _still_running(connection_id: str) -> RefreshStillRunning:
    return RefreshStillRunning(f"connection {connection_id} is being refreshed; try again in a few seconds")


def _settled(deps: Deps, connection: Connection) -> Connection:
    """The connection once no refresh of it is in flight, for a connection with a lease: its stored
    access token may already be dead at Apicbase (a refresh deletes it), never to be handed out.

    A held lease is waited for (its refresh stores its pair, or parks it); a pair still parked is
    applied; a lapsed lease (its holder died) is resolved by a refresh, which applies a parked
    pair or asks the witness. Raises RefreshStillRunning (503, try again) when it cannot tell."""
    connection_id = connection.connection_id

    def released() -> Connection | None:
        latest = deps.connections.get(connection_id)
        return latest if (latest.lease_until or 0) <= int(deps.now()) else None

    if (connection.lease_until or 0) > int(deps.now()):
        try:
            connection = wait_for_refresh(deps, connection_id, released)
        except RefreshStillRunning:
            # The holder is still at it, or parked its pair and keeps the lease until it is applied.
            parked = deps.connections.parked(connection_id)
            applied = apply_parked(deps, parked) if parked is not None else None
            if applied is None:
                raise
            return applied
    if connection.lease_until is None:
        return connection
    try:
        return refresh_connection(deps, connection_id, on_demand(deps.settings)).connection
    except RefreshInProgress:
        raise RefreshStillRunning(
            f"connection {connection_id} is being refreshed; try again in a few seconds"
        ) from None


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
