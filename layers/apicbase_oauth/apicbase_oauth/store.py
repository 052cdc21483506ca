"""DynamoDB adapter: one-time states and connections, with leases and optimistic versions.

Items (one table, key ``pk``):
- ``STATE#<sha256(state)>``: a connect session. The state itself is never stored, so a read of
  the table cannot forge a callback. Consumed with a conditional delete that also checks the
  expiry, because DynamoDB's TTL deletes late.
- ``CONN#<connection_id>``: a connection. Tokens are a KMS ciphertext. ``version`` grows with
  every token write; ``lease_owner``/``lease_until`` make refreshes single-flight;
  ``refresh_queue`` (present only while the connection should be refreshed) puts it in the
  sparse ``refresh-due`` index.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from .errors import ConditionFailed, ConnectionNotFound, DependencyUnavailable, InvalidRequest
from .observability import logger
from .validation import CONNECTION_ID_RE

ACTIVE = "active"
NEEDS_REAUTHORIZATION = "needs_reauthorization"
REFRESH_QUEUE = "due"
CONNECTIONS_INDEX = "connections-by-id"
REFRESH_INDEX = "refresh-due"

_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
}
T = TypeVar("T")


def state_key(state: str) -> str:
    return "STATE#" + hashlib.sha256(state.encode()).hexdigest()


def connection_key(connection_id: str) -> str:
    return "CONN#" + connection_id


@dataclass(frozen=True)
class ConnectSession:
    connection_id: str
    application: str
    client_id: str
    scopes: tuple[str, ...]
    redirect_uri: str
    return_url: str | None
    code_verifier: str | None
    expires_at: int


@dataclass(frozen=True)
class Connection:
    connection_id: str
    application: str
    client_id: str
    status: str
    tokens: bytes
    version: int
    expires_at: int
    scope: str | None = None
    username: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    last_refresh_at: int | None = None
    refresh_count: int = 0
    consecutive_failures: int = 0
    next_attempt_at: int | None = None
    last_error: str | None = None
    reauthorization_reason: str | None = None
    lease_owner: str | None = None
    lease_until: int | None = None
    interrupted_lease_until: int | None = None
    source: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Connection:
        def num(key: str) -> int | None:
            value = item.get(key)
            return int(value) if value is not None else None

        tokens = item["tokens"]
        return cls(
            connection_id=item["connection_id"],
            application=item["application"],
            client_id=item["client_id"],
            status=item["status"],
            tokens=bytes(tokens.value if isinstance(tokens, Binary) else tokens),  # type: ignore[attr-defined]
            version=int(item["version"]),
            expires_at=int(item["expires_at"]),
            scope=item.get("granted_scope"),
            username=item.get("username"),
            created_at=num("created_at"),
            updated_at=num("updated_at"),
            last_refresh_at=num("last_refresh_at"),
            refresh_count=num("refresh_count") or 0,
            consecutive_failures=num("consecutive_failures") or 0,
            next_attempt_at=num("next_attempt_at"),
            last_error=item.get("last_error"),
            reauthorization_reason=item.get("reauthorization_reason"),
            lease_owner=item.get("lease_owner"),
            lease_until=num("lease_until"),
            interrupted_lease_until=num("interrupted_lease_until") or None,
            source=item.get("source"),
        )

    def __repr__(self) -> str:
        return f"Connection(connection_id={self.connection_id!r}, status={self.status!r}, version={self.version})"


@dataclass(frozen=True)
class ConnectionSummary:
    connection_id: str
    status: str
    application: str | None
    scope: str | None
    username: str | None
    updated_at: int | None


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception) -> Exception:
    """botocore's errors, mapped once. Conditions are handled by the callers."""
    if isinstance(exc, ClientError):
        code = _client_error_code(exc)
        if code == "ConditionalCheckFailedException":
            item = exc.response.get("Item")
            return ConditionFailed(_deserialize(item) if isinstance(item, dict) else None)
        return DependencyUnavailable(f"DynamoDB failed ({code})", retryable=code in _RETRYABLE)
    return DependencyUnavailable("DynamoDB could not be reached", retryable=True)


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def with_backoff(
    operation: Callable[[], T],
    *,
    attempts: int = 8,
    base_delay: float = 0.05,
    sleep: Callable[[float], None],
) -> T:
    """Retry a write that must land (a rotated refresh token exists only in memory).

    ``sleep`` is the use case's (``deps.sleep``), so tests wait on their clock, not for real.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except DependencyUnavailable as exc:
            if not exc.retryable or attempt == attempts - 1:
                raise
            sleep(min(base_delay * 2**attempt, 2.0))
    raise AssertionError("unreachable")


class ConnectionStore:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.now = now

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc) from None

    # --- connect sessions ------------------------------------------------------------------
    def put_session(self, state: str, session: ConnectSession) -> None:
        item: dict[str, Any] = {
            "pk": state_key(state),
            "connection_id": session.connection_id,
            "application": session.application,
            "client_id": session.client_id,
            "scopes": " ".join(session.scopes),
            "redirect_uri": session.redirect_uri,
            "state_expires_at": session.expires_at,
            "ttl": session.expires_at + 3600,
        }
        if session.return_url:
            item["return_url"] = session.return_url
        if session.code_verifier:
            item["code_verifier"] = session.code_verifier
        self._call(self.table.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def consume_session(self, state: str) -> ConnectSession | None:
        """Delete the state and return its session, once, and only before it expires.

        Returns None for an unknown, used or expired state (the caller cannot tell which apart
        from a forged one, and neither should an attacker).
        """
        try:
            result = self._call(
                self.table.delete_item,
                Key={"pk": state_key(state)},
                ConditionExpression="attribute_exists(pk) AND state_expires_at > :now",
                ExpressionAttributeValues={":now": int(self.now())},
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            return None
        item = result.get("Attributes")
        if not item:
            return None
        return ConnectSession(
            connection_id=item["connection_id"],
            application=item["application"],
            client_id=item["client_id"],
            scopes=tuple(str(item["scopes"]).split()),
            redirect_uri=item["redirect_uri"],
            return_url=item.get("return_url"),
            code_verifier=item.get("code_verifier"),
            expires_at=int(item["state_expires_at"]),
        )

    # --- connections ----------------------------------------------------------------------
    def get(self, connection_id: str) -> Connection:
        result = self._call(self.table.get_item, Key={"pk": connection_key(connection_id)}, ConsistentRead=True)
        item = result.get("Item")
        if not item or item.get("entity") != "connection":
            raise ConnectionNotFound(f"connection {connection_id} does not exist")
        return Connection.from_item(item)

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
    ) -> Connection:
        """Create or replace a connection's grant (connect, pasted code, import). The caller
        retries it with backoff (``with_backoff``): the tokens exist only in memory until it lands.

        Bumps the version, so a refresh in flight for the previous grant cannot overwrite it.
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
        result = self._call(
            self.table.update_item,
            Key={"pk": connection_key(connection_id)},
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            ExpressionAttributeNames={"#status": "status", "#source": "source"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return Connection.from_item(result["Attributes"])

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
            result = self._call(
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
        return Connection.from_item(result["Attributes"])

    def delete(self, connection_id: str) -> Connection:
        try:
            result = self._call(
                self.table.delete_item,
                Key={"pk": connection_key(connection_id)},
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
        return Connection.from_item(result["Attributes"])

    def list(self, *, limit: int, cursor: str | None) -> tuple[list[ConnectionSummary], str | None]:
        kwargs: dict[str, Any] = {
            "IndexName": CONNECTIONS_INDEX,
            "KeyConditionExpression": "entity = :entity",
            "ExpressionAttributeValues": {":entity": "connection"},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor)
        result = self._call(self.table.query, **kwargs)
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
        return summaries, _encode_cursor(last) if last else None

    # --- refresh ------------------------------------------------------------------------
    def acquire_lease(
        self, connection_id: str, owner: str, lease_seconds: int, *, respect_backoff: bool = False
    ) -> Connection:
        """Take the refresh lease with a conditional write; the item it returns is the re-read.

        Raises ConditionFailed (with the item as it is) when the connection is leased by another
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
            result = self._call(
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
        except ConditionFailed as failed:
            if failed.item is None or failed.item.get("entity") != "connection":
                raise ConnectionNotFound(f"connection {connection_id} does not exist") from None
            raise ConditionFailed(failed.item) from None
        return Connection.from_item(result["Attributes"])

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
        result = self._call(
            self.table.update_item,
            Key={"pk": connection_key(connection.connection_id)},
            UpdateExpression="SET "
            + ", ".join(sets)
            + " REMOVE lease_owner, lease_until, next_attempt_at, last_error, interrupted_lease_until",
            ConditionExpression="version = :version",
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return Connection.from_item(result["Attributes"])

    def release_lease(self, connection: Connection, owner: str) -> None:
        """Give the lease back without changing anything else (nothing to do, token fresh)."""
        # A lease that expired and was taken over is not ours to release.
        with contextlib.suppress(ConditionFailed):
            self._call(
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
            result = self._call(
                self.table.update_item,
                Key={"pk": connection_key(connection.connection_id)},
                UpdateExpression=update,
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        return Connection.from_item(result["Attributes"])

    def mark_needs_reauthorization(self, connection: Connection, *, reason: str) -> Connection:
        """Stop refreshing: out of the refresh index, status needs_reauthorization.

        Conditional on the version: a rotated pair stored meanwhile by anyone proves the
        connection alive (ConditionFailed).
        """
        result = self._call(
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
        return Connection.from_item(result["Attributes"])

    def due_connections(self, *, due_before: int, now: int, page_size: int = 500) -> Iterator[str]:
        """Connection ids in the sparse refresh index whose token expires before ``due_before``
        and whose next attempt is not in the future. A Query: it reads the due items only."""
        kwargs: dict[str, Any] = {
            "IndexName": REFRESH_INDEX,
            "KeyConditionExpression": "refresh_queue = :queue AND expires_at <= :due",
            "FilterExpression": "attribute_not_exists(next_attempt_at) OR next_attempt_at <= :now",
            "ExpressionAttributeValues": {":queue": REFRESH_QUEUE, ":due": due_before, ":now": now},
            "ProjectionExpression": "connection_id",
            "Limit": page_size,
        }
        while True:
            result = self._call(self.table.query, **kwargs)
            for item in result.get("Items", []):
                yield item["connection_id"]
            last = result.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last
            logger.debug("next page of due connections")


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    """Cursors come from outside: accept only the exact shape we hand out."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError):
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor") from None
    expected = {"pk", "entity", "connection_id"}
    if (
        not isinstance(key, dict)
        or set(key) != expected
        or key["entity"] != "connection"
        or not isinstance(key["connection_id"], str)
        or not CONNECTION_ID_RE.match(key["connection_id"])
        or key["pk"] != connection_key(key["connection_id"])
    ):
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor")
    return key
