"""DynamoDB plumbing shared by the session and connection stores: keys, errors, items, cursors.

Items (one table, key ``pk``):
- ``STATE#<sha256(state)>``: a connect session (``sessions``).
- ``START#<sha256(start id)>``: a session's one-time start (``sessions``): GET /oauth/start.
- ``CONN#<connection_id>``, ``RESCUE#<connection_id>``: a connection, a parked pair (``connections``).
- ``BUDGET#...``: the proxy's request budget (``budget``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConditionFailed, DependencyUnavailable, InvalidCursor
from ..model import Connection, is_connection_id

REFRESH_QUEUE = "due"
CONNECTIONS_INDEX = "connections-by-id"
REFRESH_INDEX = "refresh-due"
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,1024}")

_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
}


def state_key(state: str) -> str:
    return "STATE#" + hashlib.sha256(state.encode()).hexdigest()


def start_key(start_id: str) -> str:
    return "START#" + hashlib.sha256(start_id.encode()).hexdigest()


def connection_key(connection_id: str) -> str:
    return "CONN#" + connection_id


class CheckFailed(ConditionFailed):
    """A condition did not hold; ``item`` is the item as it was, for the stores only."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__()
        self.item = item


def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """One table call, with botocore's errors mapped once. Conditions are left to the stores."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "ConditionalCheckFailedException":
            item = exc.response.get("Item")
            raise CheckFailed(_deserialize(item) if isinstance(item, dict) else None) from None
        raise DependencyUnavailable(f"DynamoDB failed ({code})", retryable=code in _RETRYABLE) from None
    except BotoCoreError:
        raise DependencyUnavailable("DynamoDB could not be reached", retryable=True) from None


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def as_bytes(value: Any) -> bytes:
    """A Binary attribute as bytes (boto3 hands back ``Binary``, moto and tests plain bytes)."""
    return bytes(value.value if isinstance(value, Binary) else value)  # type: ignore[attr-defined]


def connection_from_item(item: dict[str, Any]) -> Connection:
    def num(key: str) -> int | None:
        value = item.get(key)
        return int(value) if value is not None else None

    return Connection(
        connection_id=item["connection_id"],
        application=item["application"],
        client_id=item["client_id"],
        status=item["status"],
        tokens=as_bytes(item["tokens"]),
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
        previous_username=item.get("previous_username") or None,
        library=item.get("library"),
        generation=str(item.get("generation") or ""),
        refused_version=num("refused_version"),
        refused_until=num("refused_until"),
    )


def encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Cursors come from outside: accept only the exact shape we hand out. Matched whole first:
    base64 decoding skips characters outside its alphabet (a padded cursor would decode)."""
    if not _CURSOR_RE.fullmatch(cursor):
        raise InvalidCursor()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError):
        raise InvalidCursor() from None
    if (
        not isinstance(key, dict)
        or set(key) != {"pk", "entity", "connection_id"}
        or key["entity"] != "connection"
        or not isinstance(key["connection_id"], str)
        or not is_connection_id(key["connection_id"])
        or key["pk"] != connection_key(key["connection_id"])
    ):
        raise InvalidCursor()
    return key
