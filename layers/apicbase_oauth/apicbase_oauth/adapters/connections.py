"""The connection repository: every read and write of a connection's items, one verb each.

Items (one table, key ``pk``):
- ``CONN#<connection_id>``: the connection. The tokens are a sealed pair; ``generation`` names the
  grant (new with every grant stored); ``version`` grows with every token write;
  ``lease_owner``/``lease_until`` make refreshes single-flight;
  ``interrupted_lease_until`` remembers a lease that lapsed while held (the witness of a refresh
  that may have been cut short); ``refresh_queue`` (present only while the connection should be
  refreshed) puts it in the sparse ``refresh-due`` index. A DELETE leaves a tombstone (``entity``
  ``tombstone``, no tokens, the generation and ``deleted_at`` kept for TOMBSTONE_SECONDS, longer
  than any message or parked pair lives): nothing written for the deleted grant can revive it.
- ``RESCUE#<connection_id>``: a parked pair, sealed, whose write to its connection failed for
  good. In the refresh-due index (due at once), deleted once applied.

Every conditional write names its fence once, below (``_same_grant``, ``_lease_held_by``...): a
write made under a lease or from a parked pair holds only while the connection is still the one
that was read. Each verb makes one table call; retries are the use cases' (``custody``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import field
from typing import Any

from ..errors import ConditionFailed, ConnectionNotFound, DependencyUnavailable, LeaseHeld
from ..model import (
    ACTIVE,
    NEEDS_REAUTHORIZATION,
    Connection,
    ConnectionSummary,
    Grant,
    Rescue,
    immutable,
    new_generation,
)
from ..observability import logger
from .dynamodb import (
    CONNECTIONS_INDEX,
    REFRESH_INDEX,
    REFRESH_QUEUE,
    CheckFailed,
    as_bytes,
    call,
    connection_from_item,
    connection_key,
    decode_cursor,
    encode_cursor,
)

TOMBSTONE = "tombstone"
# A deleted connection's tombstone outlives every message (the DLQ keeps them 14 days).
TOMBSTONE_SECONDS = 30 * 24 * 3600


def rescue_key(connection_id: str) -> str:
    return "RESCUE#" + connection_id


# --- the fences: one place per condition ------------------------------------------------------
@immutable
class Condition:
    """A ConditionExpression with its values; ``&`` adds a second fence to a write."""

    expression: str
    values: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def __and__(self, other: Condition) -> Condition:
        return Condition(
            f"({self.expression}) AND ({other.expression})",
            {**self.values, **other.values},
            {**self.names, **other.names},
        )

    def arguments(self, values: dict[str, Any] | None = None, names: dict[str, str] | None = None) -> dict[str, Any]:
        """The condition's keyword arguments for a table call, merged with the update's own."""
        merged_values, merged_names = {**(values or {}), **self.values}, {**(names or {}), **self.names}
        arguments: dict[str, Any] = {"ConditionExpression": self.expression}
        if merged_values:
            arguments["ExpressionAttributeValues"] = merged_values
        if merged_names:
            arguments["ExpressionAttributeNames"] = merged_names
        return arguments


def _same_grant(generation: str, version: int) -> Condition:
    """The connection still holds the grant and the pair that were read: a connection (not a
    tombstone), of the same generation (a reconnect or a DELETE starts a new one) and the same
    version (every token write bumps it)."""
    condition = Condition(
        "entity = :fence_entity AND version = :fence_version",
        {":fence_entity": "connection", ":fence_version": version},
    )
    if not generation:  # an item written before generations
        return condition & Condition("attribute_not_exists(generation)")
    return condition & Condition("generation = :fence_generation", {":fence_generation": generation})


def _lease_held_by(owner: str) -> Condition:
    """The lease is still ours: one that lapsed and was taken over is not."""
    return Condition("lease_owner = :fence_owner", {":fence_owner": owner})


def _lease_free(now: int, *, respect_backoff: bool) -> Condition:
    """An active connection whose lease (if any) has lapsed; on the scheduled path, also not
    backing off."""
    condition = Condition(
        "entity = :fence_entity AND #status = :fence_active "
        "AND (attribute_not_exists(lease_until) OR lease_until < :fence_now)",
        {":fence_entity": "connection", ":fence_active": ACTIVE, ":fence_now": now},
        {"#status": "status"},
    )
    if respect_backoff:
        condition &= Condition(
            "attribute_not_exists(next_attempt_at) OR next_attempt_at <= :fence_now", {":fence_now": now}
        )
    return condition


def _unwritten_since(parked_at: int) -> Condition:
    """Nothing was written to the connection since a grant was parked (a grant read no version),
    and it was not deleted since (nor in that second: a deleted connection is never revived)."""
    return Condition(
        "(attribute_not_exists(updated_at) OR updated_at <= :fence_since) "
        "AND (attribute_not_exists(deleted_at) OR deleted_at < :fence_since)",
        {":fence_since": parked_at},
    )


def _is_connection() -> Condition:
    return Condition("entity = :fence_entity", {":fence_entity": "connection"})


def _parked_at(parked_at: int) -> Condition:
    """The rescue item is still the one that was read (a newer one parked meanwhile stays)."""
    return Condition("parked_at = :fence_parked", {":fence_parked": parked_at})


class ConnectionRepository:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time, must_land: Any = None) -> None:
        self.table = table
        self.now = now
        # The writes of a pair Apicbase issued (and of its rescue item) go through a client that
        # tries once, briefly: custody retries them under the function's deadline.
        self.must_land = must_land or table

    # --- reads -----------------------------------------------------------------------------
    def get(self, connection_id: str) -> Connection:
        result = call(self.table.get_item, Key={"pk": connection_key(connection_id)}, ConsistentRead=True)
        item = result.get("Item")
        if not item or item.get("entity") != "connection":
            raise ConnectionNotFound(f"connection {connection_id} does not exist")
        return connection_from_item(item)

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

    # --- connect ---------------------------------------------------------------------------
    def save_grant(self, grant: Grant) -> Connection:
        """Create or replace a connection's grant (connect, pasted code, import). Bumps the
        version, so a refresh in flight for the previous grant cannot overwrite it."""
        return self._write_grant(grant)

    def record_identity(
        self, connection: Connection, *, username: str | None, scope: str | None, library: str | None = None
    ) -> Connection:
        """Add what Apicbase told of the grant after it was stored (introspection, the user's
        library). Best effort: a newer grant (version moved on) or a failing table leaves the
        connection as it is."""
        sets: list[str] = []
        values: dict[str, Any] = {}
        for name, value in (("username", username), ("granted_scope", scope), ("library", library)):
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
                ReturnValues="ALL_NEW",
                **_same_grant(connection.generation, connection.version).arguments(values),
            )
        except (ConditionFailed, DependencyUnavailable):
            logger.warning("username not recorded", connection_id=connection.connection_id)
            return connection
        return connection_from_item(result["Attributes"])

    def remember_refused(self, connection_id: str, *, generation: str, version: int, until: int) -> None:
        """Apicbase refused (401) the access token of ``version`` right after it replaced a refused
        one: no refresh for it until ``until``. Fenced by the grant (a newer pair forgets it)."""
        self._quietly(
            self.table.update_item,
            Key={"pk": connection_key(connection_id)},
            UpdateExpression="SET refused_version = :refused, refused_until = :until",
            **_same_grant(generation, version).arguments({":refused": version, ":until": until}),
        )

    # --- refresh ---------------------------------------------------------------------------
    def take_lease(
        self, connection_id: str, owner: str, lease_seconds: int, *, respect_backoff: bool = False
    ) -> Connection:
        """Take the refresh lease with a conditional write; the item it returns is the re-read.

        Raises LeaseHeld (with the connection as it is) when the connection is leased by another
        refresher or is not active (or, with ``respect_backoff``, its next attempt is still in the
        future), and ConnectionNotFound when it does not exist.
        """
        now = int(self.now())
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection_id)},
                UpdateExpression=(
                    "SET interrupted_lease_until = if_not_exists(lease_until, :zero), "
                    "lease_owner = :owner, lease_until = :until, "
                    # A connection stored before generations gets one with its first lease.
                    "generation = if_not_exists(generation, :generation)"
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **_lease_free(now, respect_backoff=respect_backoff).arguments(
                    {":owner": owner, ":until": now + lease_seconds, ":zero": 0, ":generation": new_generation()}
                ),
            )
        except CheckFailed as failed:
            if failed.item is None or failed.item.get("entity") != "connection":
                raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
            raise LeaseHeld(connection_from_item(failed.item)) from None
        return connection_from_item(result["Attributes"])

    def save_refreshed(
        self, connection: Connection, *, tokens: bytes, expires_at: int, scope: str | None
    ) -> Connection:
        """Persist a refreshed pair, first thing after Apicbase answered; releases the lease.

        Fenced by the version read under the lease: a reconnect or a delete in between wins
        (ConditionFailed). Throttling is retried with backoff by the caller.
        """
        now = int(self.now())
        values: dict[str, Any] = {
            ":tokens": tokens,
            ":exp": expires_at,
            ":now": now,
            ":zero": 0,
            ":one": 1,
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
            self.must_land.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression="SET "
            + ", ".join(sets)
            + " REMOVE lease_owner, lease_until, next_attempt_at, last_error, interrupted_lease_until",
            ReturnValues="ALL_NEW",
            **_same_grant(connection.generation, connection.version).arguments(values),
        )
        return connection_from_item(result["Attributes"])

    def release_lease(self, connection: Connection, owner: str, *, keep_witness: bool = False) -> None:
        """Give the lease back without changing anything else (nothing to do, token fresh).
        ``keep_witness``: a lapsed lease the take copied stays lapsed, for the next refresher."""
        update, values = "REMOVE lease_owner, lease_until, interrupted_lease_until", {}
        if keep_witness and connection.interrupted_lease_until:
            update = "SET lease_until = :interrupted REMOVE lease_owner, interrupted_lease_until"
            values = {":interrupted": connection.interrupted_lease_until}
        self._quietly(
            self.table.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression=update,
            **_lease_held_by(owner).arguments(values),
        )

    def record_failure(
        self,
        connection: Connection,
        owner: str,
        *,
        error: str,
        next_attempt_at: int,
        interrupted: int | None = None,
    ) -> Connection | None:
        """Count a failed refresh, set the next attempt, release the lease. Keeps the status.

        ``interrupted`` keeps the witness of a refresh whose outcome is unknown as a lapsed lease:
        the next lease copies it into interrupted_lease_until, so the next refresher resolves it
        before it presents anything, and a later invalid_grant still names it.
        """
        values: dict[str, Any] = {
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
        if interrupted:
            values[":interrupted"] = min(interrupted, int(self.now()) - 1)  # lapsed already
            update += ", lease_until = :interrupted REMOVE lease_owner"
        else:
            update += " REMOVE lease_owner, lease_until"
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection.connection_id)},
                UpdateExpression=update,
                ReturnValues="ALL_NEW",
                **_lease_held_by(owner).arguments(values),
            )
        except ConditionFailed:
            return None
        return connection_from_item(result["Attributes"])

    def mark_for_reauthorization(self, connection: Connection, *, reason: str) -> Connection:
        """Stop refreshing: out of the refresh index, status needs_reauthorization.

        Fenced by the version: a rotated pair stored meanwhile by anyone proves the connection
        alive (ConditionFailed).
        """
        result = call(
            self.table.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression=(
                "SET #status = :status, reauthorization_reason = :reason, last_error = :error, "
                "updated_at = :now REMOVE refresh_queue, lease_owner, lease_until, next_attempt_at"
            ),
            ReturnValues="ALL_NEW",
            **_same_grant(connection.generation, connection.version).arguments(
                {
                    ":status": NEEDS_REAUTHORIZATION,
                    ":reason": reason,
                    ":error": "invalid_grant",
                    ":now": int(self.now()),
                },
                {"#status": "status"},
            ),
        )
        return connection_from_item(result["Attributes"])

    # --- parked pairs ----------------------------------------------------------------------
    def park(self, rescue: Rescue) -> None:
        """Put a sealed pair in the rescue item (in the refresh-due index, due at once)."""
        call(self.must_land.put_item, Item=_rescue_item(rescue))

    def parked(self, connection_id: str) -> Rescue | None:
        result = call(self.table.get_item, Key={"pk": rescue_key(connection_id)}, ConsistentRead=True)
        item = result.get("Item")
        return _rescue_from_item(item) if item else None

    def apply_parked(self, rescue: Rescue) -> Connection:
        """Write a parked pair to its connection: a refresh's over its base version, a grant's
        only if nothing was written since it was parked (ConditionFailed: it is stale)."""
        if rescue.kind == "refresh":
            return self._write_grant(rescue.grant, _same_grant(rescue.generation, rescue.base_version), refreshed=True)
        return self._write_grant(rescue.grant, _unwritten_since(rescue.parked_at))

    def drop_parked(self, rescue: Rescue) -> None:
        """Remove it once applied (or stale); a newer rescue parked meanwhile stays."""
        self._quietly(
            self.table.delete_item,
            Key={"pk": rescue_key(rescue.connection_id)},
            **_parked_at(rescue.parked_at).arguments(),
        )

    # --- disconnect ------------------------------------------------------------------------
    def forget(self, connection_id: str) -> Connection:
        """Delete the connection's tokens; returns it as it was (its refresh token, to revoke).

        The item becomes a tombstone for TOMBSTONE_SECONDS: no tokens, no lease, out of both
        indexes, its generation kept and ``deleted_at`` set, so that nothing written for the
        deleted grant (a refresh in flight, a parked pair, a message) can revive it, and a
        reconnect starts a new generation (its version from 1 again)."""
        now = int(self.now())
        try:
            result = call(
                self.table.update_item,
                Key={"pk": connection_key(connection_id)},
                UpdateExpression=(
                    "SET entity = :tombstone, #status = :tombstone, updated_at = :now, deleted_at = :now, "
                    "#ttl = :ttl REMOVE tokens, version, refresh_queue, lease_owner, lease_until, "
                    "interrupted_lease_until, next_attempt_at, username, previous_username, granted_scope, "
                    "created_at, reauthorization_reason"
                ),
                ReturnValues="ALL_OLD",
                **_is_connection().arguments(
                    {":tombstone": TOMBSTONE, ":now": now, ":ttl": now + TOMBSTONE_SECONDS},
                    {"#status": "status", "#ttl": "ttl"},
                ),
            )
        except ConditionFailed:
            raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
        return connection_from_item(result["Attributes"])

    # --- plumbing --------------------------------------------------------------------------
    def _write_grant(self, grant: Grant, fence: Condition | None = None, *, refreshed: bool = False) -> Connection:
        """``refreshed``: a parked refresh's pair, counted as the refresh it is (not a new grant)."""
        now = int(self.now())
        values: dict[str, Any] = {
            ":entity": "connection",
            ":cid": grant.connection_id,
            ":app": grant.application,
            ":client": grant.client_id,
            ":status": ACTIVE,
            ":tokens": grant.tokens,
            ":exp": grant.expires_at,
            ":queue": REFRESH_QUEUE,
            ":now": now,
            ":zero": 0,
            ":one": 1,
            ":source": grant.source,
            ":nobody": "",
            ":generation": grant.generation or new_generation(),
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
            "generation = :generation",
            # Whom the replaced grant belonged to (a reconnect by another user is announced).
            "previous_username = if_not_exists(username, :nobody)",
        ]
        if refreshed:
            sets += ["last_refresh_at = :now", "refresh_count = if_not_exists(refresh_count, :zero) + :one"]
        removes = [
            "next_attempt_at",
            "last_error",
            "reauthorization_reason",
            "lease_owner",
            "lease_until",
            "interrupted_lease_until",
            "library",  # the new grant's is told after it is stored
            # A tombstone's, when the connection is connected again after a DELETE.
            "deleted_at",
            "#ttl",
        ]
        # `scope` is a DynamoDB reserved word.
        for name, value in (("granted_scope", grant.scope), ("username", grant.username)):
            if value is not None:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
            else:
                removes.append(name)
        names = {"#status": "status", "#source": "source", "#ttl": "ttl"}
        arguments = (
            fence.arguments(values, names)
            if fence
            else {"ExpressionAttributeValues": values, "ExpressionAttributeNames": names}
        )
        result = call(
            self.must_land.update_item,
            Key={"pk": connection_key(grant.connection_id)},
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            ReturnValues="ALL_NEW",
            **arguments,
        )
        return connection_from_item(result["Attributes"])

    @staticmethod
    def _quietly(fn: Callable[..., Any], **kwargs: Any) -> None:
        """A conditional write whose condition failing means someone else already moved on."""
        with contextlib.suppress(ConditionFailed):
            call(fn, **kwargs)


def _rescue_item(rescue: Rescue) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": rescue_key(rescue.connection_id),
        "generation": rescue.generation,
        "entity": "rescue",
        "connection_id": rescue.connection_id,
        "kind": rescue.kind,
        "tokens": rescue.tokens,
        "base_version": rescue.base_version,
        "application": rescue.application,
        "client_id": rescue.client_id,
        "rescued_expires_at": rescue.expires_at,
        "source": rescue.source,
        "parked_at": rescue.parked_at,
        # In the refresh-due index, due at once: the scheduler's sweep finds it.
        "refresh_queue": REFRESH_QUEUE,
        "expires_at": 0,
    }
    for name, value in (("granted_scope", rescue.scope), ("username", rescue.username)):
        if value is not None:
            item[name] = value
    return item


def _rescue_from_item(item: dict[str, Any]) -> Rescue:
    return Rescue(
        connection_id=item["connection_id"],
        kind=item["kind"],
        tokens=as_bytes(item["tokens"]),
        base_version=int(item["base_version"]),
        application=item["application"],
        client_id=item["client_id"],
        expires_at=int(item["rescued_expires_at"]),
        scope=item.get("granted_scope"),
        username=item.get("username"),
        source=item["source"],
        parked_at=int(item["parked_at"]),
        generation=str(item.get("generation") or ""),
    )
