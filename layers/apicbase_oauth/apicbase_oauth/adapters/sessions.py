"""DynamoDB adapter for connect sessions: one-time states.

The state itself is never stored (only its SHA-256), so a read of the table cannot forge a
callback. A session is consumed with a conditional delete that also checks the expiry, because
DynamoDB's TTL deletes late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ConditionFailed
from ..model import ConnectSession
from .dynamodb import call, state_key


class SessionStore:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.now = now

    def put(self, state: str, session: ConnectSession) -> None:
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
        call(self.table.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def consume(self, state: str) -> ConnectSession | None:
        """Delete the state and return its session, once, and only before it expires.

        Returns None for an unknown, used or expired state (the caller cannot tell which apart
        from a forged one, and neither should an attacker).
        """
        try:
            result = call(
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
