"""Admin: describe and list connections, refresh one now, disconnect one."""

from __future__ import annotations

from dataclasses import dataclass

from .adapters.apicbase import Introspection
from .adapters.events import CONNECTION_DISCONNECTED
from .deps import Deps
from .model import Connection, ConnectionSummary
from .observability import logger, metrics
from .refresh import RefreshResult, refresh_connection


@dataclass(frozen=True)
class ConnectionPage:
    connections: list[ConnectionSummary]
    next_cursor: str | None


def describe_connection(deps: Deps, connection_id: str) -> Connection:
    return deps.store.get(connection_id)


def introspect_connection(deps: Deps, connection: Connection) -> Introspection:
    """Ask Apicbase what it knows of the connection's current access token."""
    pair = deps.cipher.decrypt(connection.connection_id, connection.tokens)
    return deps.apicbase.introspect(deps.credentials.get(connection.application), token=pair.access_token)


def list_connections(deps: Deps, *, limit: int, cursor: str | None) -> ConnectionPage:
    summaries, next_cursor = deps.store.list(limit=limit, cursor=cursor)
    return ConnectionPage(summaries, next_cursor)


def force_refresh(deps: Deps, connection_id: str) -> RefreshResult:
    return refresh_connection(deps, connection_id, min_validity=0, force=True)


def disconnect(deps: Deps, connection_id: str) -> Connection:
    connection = deps.store.delete(connection_id)
    metrics.add_metric(name="ConnectionDeleted", unit="Count", value=1)
    logger.info("connection deleted", connection_id=connection.connection_id)
    deps.events.publish(
        CONNECTION_DISCONNECTED,
        {
            "connection_id": connection.connection_id,
            "application": connection.application,
            "username": connection.username,
        },
    )
    return connection
