"""DynamoDB adapter for the proxy's request budget: one atomic counter per Apicbase user and minute.

Apicbase allows 100 requests per minute per user, then answers 429. The budget is kept in the
connections table so that every caller and every container spends the same one: item
``BUDGET#<sha256 of the user>#<minute>`` (``minute`` is epoch seconds // 60), counted by one
conditional ``ADD`` per proxied request, and dropped by the table's TTL a few minutes later.
The item has no ``entity``, so it never shows in the connections index.

Windows are calendar minutes: a caller that spends a budget at the end of one minute and again at
the start of the next can reach Apicbase twice the budget in 60 s, which Apicbase then answers
with its own 429 (passed on with its Retry-After). Set ``ApicbaseRateLimitPerMinute`` lower for
more margin.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConditionFailed, DependencyUnavailable, OverBudget
from .dynamodb import call

BUDGET_PREFIX = "BUDGET#"
# Kept past its minute for late readers (an operator looking at a spike), then dropped by TTL.
KEEP_SECONDS = 300


def budget_key(spender: str, minute: int) -> str:
    """The item of ``spender``'s budget for ``minute``; the user name is hashed (no personal data
    in keys, a fixed length whatever the name)."""
    digest = hashlib.sha256(spender.encode()).hexdigest()[:32]
    return f"{BUDGET_PREFIX}{digest}#{minute}"


def spender(*, username: str | None, connection_id: str) -> str:
    """Apicbase counts per user: connections of one user share a budget. Before the user is known
    (introspection failed at connect), the connection stands for its user."""
    return f"user:{username}" if username else f"connection:{connection_id}"


class RequestBudget:
    def __init__(self, table: Any, *, per_minute: int, now: Callable[[], float] = time.time) -> None:
        self.table = table
        self.per_minute = per_minute
        self.now = now

    def spend(self, spender: str) -> str:
        """Count one request (one UpdateItem), or raise ``OverBudget`` with the seconds to the
        next minute when this minute's budget is spent (nothing is counted then). Returns the
        counter it was counted on (to give it back)."""
        now = self.now()
        minute = int(now // 60)
        expires = (minute + 1) * 60 + KEEP_SECONDS
        key = budget_key(spender, minute)
        try:
            call(
                self.table.update_item,
                Key={"pk": key},
                UpdateExpression="ADD #count :one SET #ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
                ExpressionAttributeNames={"#count": "count", "#ttl": "ttl"},
                ExpressionAttributeValues={":one": 1, ":limit": self.per_minute, ":ttl": expires},
            )
        except ConditionFailed:
            retry_after = max(1, math.ceil((minute + 1) * 60 - now))
            raise OverBudget(
                f"the budget of {self.per_minute} Apicbase requests per minute for this user is spent",
                retry_after=retry_after,
            ) from None
        return key

    def give_back(self, key: str) -> None:
        """Uncount one request Apicbase did not serve (its own 429): the caller's retry is the one
        that costs. Best effort: a failure leaves the unit spent."""
        with contextlib.suppress(ConditionFailed, DependencyUnavailable):
            call(
                self.table.update_item,
                Key={"pk": key},
                UpdateExpression="ADD #count :minus_one",
                ConditionExpression="#count > :zero",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={":minus_one": -1, ":zero": 0},
            )
