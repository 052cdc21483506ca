"""DynamoDB adapter for connect sessions: one-time states, bound to one browser.

The state itself is never stored in a session (only its SHA-256), so a read of the table cannot
forge a callback. A session is consumed with a conditional delete that also checks the expiry,
because DynamoDB's TTL deletes late.

Browser binding (RFC 9700 4.7.1): a session starts unbound, with a one-time start
item ``START#<sha256(start id)>`` that holds the authorize URL until GET /oauth/start consumes
it. That route needs the state to send the browser to Apicbase, and the table keeps hashes of
states only: the start item is the one place a state is written, for at most the state's
lifetime and only until the person opens connect_url. A table reader who takes the state from
there still cannot complete a callback: the callback needs the binder cookie whose hash is set
on the session by /oauth/start, and only the holder of the start id (stored hashed) gets one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ConditionFailed
from ..model import ConnectSession, immutable
from .dynamodb import call, start_key, state_key


@immutable
class PendingStart:
    """A start item just consumed: where to send the browser, and which session to bind."""

    authorize_url: str
    session_key: str
    expires_at: int

    @property
    def tag(self) -> str:
        return session_tag(self.session_key)

    def __repr__(self) -> str:  # the authorize URL carries the state
        return f"PendingStart(expires_at={self.expires_at})"


def session_tag(session_key: str) -> str:
    """A short name of a session, the same from its key (GET /oauth/start) and from its state
    (the callback, via ``state_key``): its binder cookie is named with it, so that the sign-ins a
    browser has under way each keep their own cookie."""
    return session_key.removeprefix("STATE#")[:16]


class SessionStore:
    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.now = now

    def put(self, state: str, session: ConnectSession, *, start_id: str, authorize_url: str) -> None:
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
        if session.expected_username:
            item["expected_username"] = session.expected_username
        call(self.table.put_item, Item=item, ConditionExpression="attribute_not_exists(pk)")
        # Second, so that a start item never points at a session that is not there.
        call(
            self.table.put_item,
            Item={
                "pk": start_key(start_id),
                "session_key": item["pk"],
                "authorize_url": authorize_url,
                "state_expires_at": session.expires_at,
                "ttl": session.expires_at + 3600,
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def take_start(self, start_id: str) -> PendingStart | None:
        """Delete the start item and return it, once, and only before the session expires."""
        item = self._take(start_key(start_id))
        if not item or "session_key" not in item:
            return None
        return PendingStart(str(item["authorize_url"]), str(item["session_key"]), int(item["state_expires_at"]))

    def bind(self, session_key: str, binder_hash: str) -> bool:
        """Set the session's binder hash, once: False if it is gone, expired or already bound."""
        try:
            call(
                self.table.update_item,
                Key={"pk": session_key},
                UpdateExpression="SET binder_hash = :hash",
                ConditionExpression=(
                    "attribute_exists(pk) AND attribute_not_exists(binder_hash) AND state_expires_at > :now"
                ),
                ExpressionAttributeValues={":hash": binder_hash, ":now": int(self.now())},
            )
        except ConditionFailed:
            return False
        return True

    def consume(self, state: str) -> ConnectSession | None:
        """Delete the state and return its session, once, and only before it expires.

        Returns None for an unknown, used or expired state (the caller cannot tell which apart
        from a forged one, and neither should an attacker).
        """
        item = self._take(state_key(state))
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
            expected_username=item.get("expected_username"),
            binder_hash=item.get("binder_hash"),
        )

    def _take(self, key: str) -> dict[str, Any] | None:
        """Delete the item and return it, once, and only before its session expires (DynamoDB's
        TTL deletes late): None for an unknown, used or expired key."""
        try:
            result = call(
                self.table.delete_item,
                Key={"pk": key},
                ConditionExpression="attribute_exists(pk) AND state_expires_at > :now",
                ExpressionAttributeValues={":now": int(self.now())},
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            return None
        item: dict[str, Any] | None = result.get("Attributes")
        return item
