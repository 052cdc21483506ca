"""EventBridge events about connections, put in order by the stream's function.

``put`` says how many it put before the first that EventBridge did not take, so the caller can
have Lambda deliver the rest of the stream again: an event is put at least once, and every copy
of it carries the same ``event_id``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..observability import logger, metrics

CONNECTION_CREATED = "Apicbase Connection Created"
REAUTHORIZATION_REQUIRED = "Apicbase Connection Reauthorization Required"
REFRESH_FAILING = "Apicbase Connection Refresh Failing"
CONNECTION_DISCONNECTED = "Apicbase Connection Disconnected"
IDENTITY_CHANGED = "Apicbase Connection Identity Changed"
CONNECTION_RECOVERED = "Apicbase Connection Recovered"
MAX_ENTRIES = 10  # PutEvents' limit per call


@dataclass(frozen=True)
class Event:
    detail_type: str
    detail: dict[str, Any]  # carries its own event_id
    time: float  # when the change it reports was written


class EventPublisher:
    def __init__(self, events_client: Any, *, bus_name: str, source: str) -> None:
        self.events = events_client
        self.bus_name = bus_name
        self.source = source

    def _entry(self, event: Event) -> dict[str, Any]:
        return {
            "Source": self.source,
            "DetailType": event.detail_type,
            "Detail": json.dumps(event.detail, separators=(",", ":")),
            "EventBusName": self.bus_name,
            "Time": datetime.fromtimestamp(event.time, UTC),
        }

    def put(self, events: Sequence[Event]) -> int:
        """Put ``events`` in order, ten per call; returns how many were put before the first that
        was not (``len(events)``: all). Later entries of the same call may have been put too: they
        are put again with the rest, under the same ``event_id``."""
        for start in range(0, len(events), MAX_ENTRIES):
            chunk = events[start : start + MAX_ENTRIES]
            try:
                result = self.events.put_events(Entries=[self._entry(event) for event in chunk])
                codes = [entry.get("ErrorCode") for entry in result.get("Entries", [])]
            except (ClientError, BotoCoreError) as exc:
                codes = [type(exc).__name__]
            refused = next((i for i, code in enumerate(codes) if code), None)
            if refused is None and len(codes) != len(chunk):
                refused = len(codes)  # an answer without an entry for each event: count none of the rest
            if refused is not None:
                event = chunk[min(refused, len(chunk) - 1)]
                logger.error(
                    "event not published; the stream delivers it again",
                    detail_type=event.detail_type,
                    event_id=event.detail.get("event_id"),
                    connection_id=event.detail.get("connection_id"),
                    error=codes[refused] if refused < len(codes) else "missing_entry",
                )
                metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
                return start + refused
        return len(events)
