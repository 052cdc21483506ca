"""DynamoDB adapter for the rescue place: ``RESCUE#<connection_id>`` items.

A rescue item holds a sealed pair whose write to its connection failed for good. It sits in the
sparse ``refresh-due`` index (due at once), so the scheduler's tick finds it even if nothing else
does, and it is deleted once applied.
"""

from __future__ import annotations

import contextlib
from typing import Any

from boto3.dynamodb.types import Binary

from ..errors import ConditionFailed
from ..model import Rescue
from .dynamodb import REFRESH_QUEUE, call


def rescue_key(connection_id: str) -> str:
    return "RESCUE#" + connection_id


def rescue_item(rescue: Rescue) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": rescue_key(rescue.connection_id),
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


def rescue_from_item(item: dict[str, Any]) -> Rescue:
    tokens = item["tokens"]
    return Rescue(
        connection_id=item["connection_id"],
        kind=item["kind"],
        tokens=bytes(tokens.value if isinstance(tokens, Binary) else tokens),  # type: ignore[attr-defined]
        base_version=int(item["base_version"]),
        application=item["application"],
        client_id=item["client_id"],
        expires_at=int(item["rescued_expires_at"]),
        scope=item.get("granted_scope"),
        username=item.get("username"),
        source=item["source"],
        parked_at=int(item["parked_at"]),
    )


class RescueStore:
    def __init__(self, table: Any) -> None:
        self.table = table

    def put(self, rescue: Rescue) -> None:
        call(self.table.put_item, Item=rescue_item(rescue))

    def get(self, connection_id: str) -> Rescue | None:
        result = call(self.table.get_item, Key={"pk": rescue_key(connection_id)}, ConsistentRead=True)
        item = result.get("Item")
        return rescue_from_item(item) if item else None

    def delete(self, rescue: Rescue) -> None:
        """Remove it once applied (or stale); a newer rescue parked meanwhile stays."""
        with contextlib.suppress(ConditionFailed):
            call(
                self.table.delete_item,
                Key={"pk": rescue_key(rescue.connection_id)},
                ConditionExpression="parked_at = :parked",
                ExpressionAttributeValues={":parked": rescue.parked_at},
            )
