"""DynamoDB adapter for refreshes: the single-flight lease and the writes made under it.

A lease (``lease_owner``/``lease_until``) is taken with a conditional write that returns the item
(that is the re-read); every write under it is conditional on the version read then, so a
reconnect or a delete in between wins. ``interrupted_lease_until`` remembers a lease that lapsed
while held: the witness of a refresh that may have been cut short.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConditionFailed, ConnectionNotFound, LeaseHeld
from ..model import ACTIVE, NEEDS_REAUTHORIZATION, Connection
from .dynamodb import REFRESH_QUEUE, CheckFailed, call, connection_from_item, connection_key


class LeaseStore:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.now = now

    def acquire_lease(
        self, connection_id: str, owner: str, lease_seconds: int, *, respect_backoff: bool = False
    ) -> Connection:
        """Take the refresh lease with a conditional write; the item it returns is the re-read.

        Raises LeaseHeld (with the connection as it is) when the connection is leased by another
        refresher or is not active (or, with ``respect_backoff``, its next attempt is still in the
        future), and ConnectionNotFound when it does not exist.
        """
        now = int(self.now())
        condition = (
            "entity = :entity AND #status = :active AND (attribute_not_exists(lease_until) OR lease_until < :now)"
        )
        if respect_backoff:
            condition += " AND (attribute_not_exists(next_attempt_at) OR next_attempt_at <= :now)"
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection_id)},
                UpdateExpression=(
                    "SET interrupted_lease_until = if_not_exists(lease_until, :zero), "
                    "lease_owner = :owner, lease_until = :until"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":owner": owner,
                    ":until": now + lease_seconds,
                    ":now": now,
                    ":zero": 0,
                    ":entity": "connection",
                    ":active": ACTIVE,
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except CheckFailed as failed:
            if failed.item is None or failed.item.get("entity") != "connection":
                raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
            raise LeaseHeld(connection_from_item(failed.item)) from None
        return connection_from_item(result["Attributes"])

    def save_refreshed(
        self,
        connection: Connection,
        *,
        tokens: bytes,
        expires_at: int,
        scope: str | None,
    ) -> Connection:
        """Persist a refreshed pair, first thing after Apicbase answered.

        Conditional on the version read under the lease: a reconnect or a delete in between wins
        (ConditionFailed). Throttling is retried with backoff by the caller.
        """
        now = int(self.now())
        values: dict[str, Any] = {
            ":tokens": tokens,
            ":exp": expires_at,
            ":now": now,
            ":zero": 0,
            ":one": 1,
            ":version": connection.version,
            ":queue": REFRESH_QUEUE,
        }
        sets = [
            "tokens = :tokens",
            "expires_at = :exp",
            "updated_at = :now",
            "last_refresh_at = :now",
            "version = version + :one",
            "refresh_count = if_not_exists(refresh_count, :zero) + :one",
            "consecutive_failures = :zero",
            "refresh_queue = :queue",
        ]
        if scope is not None:
            values[":scope"] = scope
            sets.append("granted_scope = :scope")
        result = call(
            self.table.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression="SET "
            + ", ".join(sets)
            + " REMOVE lease_owner, lease_until, next_attempt_at, last_error, interrupted_lease_until",
            ConditionExpression="version = :version",
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return connection_from_item(result["Attributes"])

    def release_lease(self, connection: Connection, owner: str) -> None:
        """Give the lease back without changing anything else (nothing to do, token fresh)."""
        # A lease that expired and was taken over is not ours to release.
        with contextlib.suppress(ConditionFailed):
            call(
                self.table.update_item,
                Key={"pk": connection_key(connection.connection_id)},
                UpdateExpression="REMOVE lease_owner, lease_until, interrupted_lease_until",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": owner},
            )

    def record_failure(
        self,
        connection: Connection,
        owner: str,
        *,
        error: str,
        next_attempt_at: int,
    ) -> Connection | None:
        """Count a failed refresh, set the next attempt, release the lease. Keeps the status."""
        values: dict[str, Any] = {
            ":owner": owner,
            ":zero": 0,
            ":one": 1,
            ":next": next_attempt_at,
            ":error": error,
            ":now": int(self.now()),
        }
        update = (
            "SET consecutive_failures = if_not_exists(consecutive_failures, :zero) + :one, "
            "next_attempt_at = :next, last_error = :error, updated_at = :now"
        )
        if connection.interrupted_lease_until:
            # Keep the witness of an interrupted refresh as a lapsed lease: the next lease copies
            # it into interrupted_lease_until, so a later invalid_grant still names it.
            values[":interrupted"] = connection.interrupted_lease_until
            update += ", lease_until = :interrupted REMOVE lease_owner"
        else:
            update += " REMOVE lease_owner, lease_until"
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection.connection_id)},
                UpdateExpression=update,
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        return connection_from_item(result["Attributes"])

    def mark_needs_reauthorization(self, connection: Connection, *, reason: str) -> Connection:
        """Stop refreshing: out of the refresh index, status needs_reauthorization.

        Conditional on the version: a rotated pair stored meanwhile by anyone proves the
        connection alive (ConditionFailed).
        """
        result = call(
            self.table.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression=(
                "SET #status = :status, reauthorization_reason = :reason, last_error = :error, "
                "updated_at = :now REMOVE refresh_queue, lease_owner, lease_until, next_attempt_at"
            ),
            ConditionExpression="version = :version",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":status": NEEDS_REAUTHORIZATION,
                ":reason": reason,
                ":error": "invalid_grant",
                ":now": int(self.now()),
                ":version": connection.version,
            },
            ReturnValues="ALL_NEW",
        )
        return connection_from_item(result["Attributes"])
