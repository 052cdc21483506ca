"""EventBridge events about connections. Best effort: an event that cannot be sent is logged
and counted, and never undoes the change it reports."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..observability import logger, metrics

CONNECTION_CREATED = "Apicbase Connection Created"
REAUTHORIZATION_REQUIRED = "Apicbase Connection Reauthorization Required"
REFRESH_FAILING = "Apicbase Connection Refresh Failing"
CONNECTION_DISCONNECTED = "Apicbase Connection Disconnected"
IDENTITY_CHANGED = "Apicbase Connection Identity Changed"


class EventPublisher:
    def __init__(self, events_client: Any, *, bus_name: str, source: str) -> None:
        self.events = events_client
        self.bus_name = bus_name
        self.source = source

    def publish(self, detail_type: str, detail: dict[str, Any]) -> bool:
        entry = {
            "Source": self.source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
            "EventBusName": self.bus_name,
        }
        try:
            result = self.events.put_events(Entries=[entry])
            failed = result.get("FailedEntryCount", 0)
        except (ClientError, BotoCoreError):
            failed = 1
        if failed:
            logger.error("event not published", detail_type=detail_type, connection_id=detail.get("connection_id"))
            metrics.add_metric(name="EventPublishFailed", unit="Count", value=1)
            return False
        return True
