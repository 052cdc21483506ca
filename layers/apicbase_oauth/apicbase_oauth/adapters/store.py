"""DynamoDB adapter for connections: grants, leases and optimistic versions.

``CONN#<connection_id>`` items hold the tokens as a KMS ciphertext. ``version`` grows with every
token write; ``lease_owner``/``lease_until`` make refreshes single-flight; ``refresh_queue``
(present only while the connection should be refreshed) puts it in the sparse ``refresh-due``
index. Retries are the use cases' (``custody``): this module makes one call per method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConditionFailed, ConnectionNotFound, DependencyUnavailable
from ..model import ACTIVE, Connection, ConnectionSummary
from ..observability import logger
from .dynamodb import (
    CONNECTIONS_INDEX,
    REFRESH_INDEX,
    REFRESH_QUEUE,
    call,
    connection_from_item,
    connection_key,
    decode_cursor,
    encode_cursor,
)


class ConnectionStore:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.now = now

    # --- connections ----------------------------------------------------------------------
    def get(self, connection_id: str) -> Connection:
        result = call(self.table.get_item, Key={"pk": connection_key(connection_id)}, ConsistentRead=True)
        item = result.get("Item")
        if not item or item.get("entity") != "connection":
            raise ConnectionNotFound(f"connection {connection_id} does not exist")
        return connection_from_item(item)

    def save_tokens(
        self,
        *,
        connection_id: str,
        application: str,
        client_id: str,
        tokens: bytes,
        expires_at: int,
        scope: str | None,
        username: str | None,
        source: str,
        expected_version: int | None = None,
        unwritten_since: int | None = None,
    ) -> Connection:
        """Create or replace a connection's grant (connect, pasted code, import, a rescued pair).
        The caller retries it (``custody``): the tokens exist only in memory until it lands.

        Bumps the version, so a refresh in flight for the previous grant cannot overwrite it.
        A rescued pair is written only over ``expected_version`` (a refresh's), or only if nothing
        was written since ``unwritten_since`` (a grant's, which read no version).
        """
        now = int(self.now())
        values: dict[str, Any] = {
            ":entity": "connection",
            ":cid": connection_id,
            ":app": application,
            ":client": client_id,
            ":status": ACTIVE,
            ":tokens": tokens,
            ":exp": expires_at,
            ":queue": REFRESH_QUEUE,
            ":now": now,
            ":zero": 0,
            ":one": 1,
            ":source": source,
            ":nobody": "",
        }
        sets = [
            "entity = :entity",
            "connection_id = :cid",
            "application = :app",
            "client_id = :client",
            "#status = :status",
            "tokens = :tokens",
            "expires_at = :exp",
            "refresh_queue = :queue",
            "updated_at = :now",
            "created_at = if_not_exists(created_at, :now)",
            "version = if_not_exists(version, :zero) + :one",
            "consecutive_failures = :zero",
            "#source = :source",
            # Whom the replaced grant belonged to (issue 12: a reconnect by another user is announced).
            "previous_username = if_not_exists(username, :nobody)",
        ]
        removes = [
            "next_attempt_at",
            "last_error",
            "reauthorization_reason",
            "lease_owner",
            "lease_until",
            "interrupted_lease_until",
        ]
        # `scope` is a DynamoDB reserved word.
        for name, value in (("granted_scope", scope), ("username", username)):
            if value is not None:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
            else:
                removes.append(name)
        condition: dict[str, Any] = {}
        if expected_version is not None:
            values[":base"] = expected_version
            condition["ConditionExpression"] = "version = :base"
        elif unwritten_since is not None:
            values[":since"] = unwritten_since
            condition["ConditionExpression"] = "attribute_not_exists(updated_at) OR updated_at <= :since"
        result = call(
            self.table.update_item,
            Key={"pk": connection_key(connection_id)},
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            ExpressionAttributeNames={"#status": "status", "#source": "source"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            **condition,
        )
        return connection_from_item(result["Attributes"])

    def record_identity(self, connection: Connection, *, username: str | None, scope: str | None) -> Connection:
        """Add what introspection told after the grant was stored. Best effort: a newer grant
        (version moved on) or a failing table leaves the connection as it is."""
        sets: list[str] = []
        values: dict[str, Any] = {":version": connection.version}
        for name, value in (("username", username), ("granted_scope", scope)):
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = value
        if not sets:
            return connection
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection.connection_id)},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="version = :version",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except (ConditionFailed, DependencyUnavailable):
            logger.warning("username not recorded", connection_id=connection.connection_id)
            return connection
        return connection_from_item(result["Attributes"])

    def delete(self, connection_id: str) -> Connection:
        try:
            result = call(
                self.table.delete_item,
                Key={"pk": connection_key(connection_id)},
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
        return connection_from_item(result["Attributes"])

    def list(self, *, limit: int, cursor: str | None) -> tuple[list[ConnectionSummary], str | None]:
        kwargs: dict[str, Any] = {
            "IndexName": CONNECTIONS_INDEX,
            "KeyConditionExpression": "entity = :entity",
            "ExpressionAttributeValues": {":entity": "connection"},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor)
        result = call(self.table.query, **kwargs)
        summaries = [
            ConnectionSummary(
                connection_id=item["connection_id"],
                status=item.get("status", ""),
                application=item.get("application"),
                scope=item.get("granted_scope"),
                username=item.get("username"),
                updated_at=int(item["updated_at"]) if "updated_at" in item else None,
            )
            for item in result.get("Items", [])
        ]
        last = result.get("LastEvaluatedKey")
        return summaries, encode_cursor(last) if last else None

    def due_connections(self, *, due_before: int, now: int, page_size: int = 500) -> Iterator[tuple[str, bool]]:
        """(connection id, parked) for the items in the sparse refresh index whose token expires
        before ``due_before`` and whose next attempt is not in the future, and every parked rescue
        (due at once). A Query: it reads the due items only."""
        kwargs: dict[str, Any] = {
            "IndexName": REFRESH_INDEX,
            "KeyConditionExpression": "refresh_queue = :queue AND expires_at <= :due",
            "FilterExpression": "attribute_not_exists(next_attempt_at) OR next_attempt_at <= :now",
            "ExpressionAttributeValues": {":queue": REFRESH_QUEUE, ":due": due_before, ":now": now},
            "ProjectionExpression": "connection_id, pk",
            "Limit": page_size,
        }
        while True:
            result = call(self.table.query, **kwargs)
            for item in result.get("Items", []):
                yield item["connection_id"], str(item["pk"]).startswith("RESCUE#")
            last = result.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last
            logger.debug("next page of due connections")
