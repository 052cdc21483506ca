"""Admin: describe and list connections, refresh one now, disconnect one."""

from __future__ import annotations

import dataclasses

from .adapters.apicbase import Introspection
from .custody import revoke_quietly
from .deps import Deps
from .errors import BrokerError
from .freshness import ADMIN
from .model import Connection, ConnectionSummary, RefreshResult, immutable
from .observability import logger, metrics
from .refresh import refresh_connection


@immutable
class ConnectionPage:
    connections: list[ConnectionSummary]
    next_cursor: str | None


def describe_connection(deps: Deps, connection_id: str) -> Connection:
    return deps.connections.get(connection_id)


def introspect_connection(deps: Deps, connection: Connection) -> Introspection:
    """Ask Apicbase what it knows of the connection's current access token."""
    pair = deps.cipher.decrypt(connection.connection_id, connection.tokens)
    return deps.apicbase.introspect(deps.credentials.get(connection.application), token=pair.access_token)


def list_connections(deps: Deps, *, limit: int, cursor: str | None) -> ConnectionPage:
    summaries, next_cursor = deps.connections.list(limit=limit, cursor=cursor)
    return ConnectionPage(summaries, next_cursor)


def force_refresh(deps: Deps, connection_id: str) -> RefreshResult:
    """Refresh now, unless Apicbase asked to wait (its Retry-After is passed on). The lease write
    returns the connection: nothing is read before it."""
    return refresh_connection(deps, connection_id, ADMIN)


# What happened to the grant at Apicbase when a connection was disconnected.
REVOKED, REVOCATION_FAILED, REVOCATION_NOT_CONFIGURED = "revoked", "failed", "not_configured"


@immutable
class Disconnection:
    connection: Connection
    revocation: str  # REVOKED, REVOCATION_FAILED or REVOCATION_NOT_CONFIGURED
    revocation_error: str | None = None  # the error code when it failed

    @property
    def revoked(self) -> bool:
        return self.revocation == REVOKED


def disconnect(deps: Deps, connection_id: str) -> Disconnection:
    """Forget the connection's tokens, then revoke its refresh token at Apicbase (RFC 7009).

    The delete comes first and always: a revocation that fails or is not configured is recorded
    and reported, never a reason to keep the tokens. The refresh token revoked is the one in the
    item the delete removed, so a refresh that rotated it meanwhile cannot leave an older one.
    """
    connection = deps.connections.forget(connection_id)
    metrics.add_metric(name="ConnectionDeleted", unit="Count", value=1)
    logger.info("connection deleted", connection_id=connection.connection_id)
    _forget_parked(deps, connection)
    return _revoke(deps, connection)


def _forget_parked(deps: Deps, connection: Connection) -> None:
    """A pair parked for this connection (custody) must not revive it: removed, and its refresh
    token revoked as well (best effort, like the connection's own)."""
    try:
        rescue = deps.connections.parked(connection.connection_id)
        if rescue is None:
            return
        deps.connections.drop_parked(rescue)
    except BrokerError:
        logger.warning("parked tokens not checked", connection_id=connection.connection_id)
        return
    _revoke(deps, dataclasses.replace(connection, tokens=rescue.tokens))


def _revoke(deps: Deps, connection: Connection) -> Disconnection:
    if not deps.apicbase.revoke_url:
        # The operator's choice (ApicbaseRevokeUrl empty): reported in the answer and the event.
        logger.info("refresh token not revoked: no revocation endpoint", connection_id=connection.connection_id)
        return Disconnection(connection, REVOCATION_NOT_CONFIGURED)
    error = revoke_quietly(deps, connection.connection_id, connection.application, connection.tokens)
    if error is not None:
        return Disconnection(connection, REVOCATION_FAILED, error)
    logger.info("refresh token revoked", connection_id=connection.connection_id)
    return Disconnection(connection, REVOKED)
