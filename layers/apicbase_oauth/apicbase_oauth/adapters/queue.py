"""SQS adapter for refresh messages: ``{"connection_id": "...", "queued_at": 1700000000}``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import DependencyUnavailable, InvalidRequest
from ..model import is_connection_id
from ..observability import logger

BATCH_SIZE = 10  # SQS SendMessageBatch's maximum
MAX_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class RefreshMessage:
    connection_id: str
    queued_at: int


def encode(connection_id: str, queued_at: int) -> str:
    return json.dumps({"connection_id": connection_id, "queued_at": queued_at}, separators=(",", ":"))


def decode(body: Any) -> RefreshMessage:
    """Only messages of exactly our shape; anything else is a poison message."""
    if not isinstance(body, str) or len(body) > MAX_MESSAGE_BYTES:
        raise InvalidRequest("refresh message is not a short string", code="invalid_message")
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidRequest("refresh message is not JSON", code="invalid_message") from None
    if not isinstance(data, dict) or set(data) != {"connection_id", "queued_at"}:
        raise InvalidRequest("refresh message does not have our fields", code="invalid_message")
    cid, queued_at = data["connection_id"], data["queued_at"]
    if not isinstance(cid, str) or not is_connection_id(cid):
        raise InvalidRequest("refresh message has an invalid connection_id", code="invalid_message")
    if isinstance(queued_at, bool) or not isinstance(queued_at, int) or queued_at < 0:
        raise InvalidRequest("refresh message has an invalid queued_at", code="invalid_message")
    return RefreshMessage(connection_id=cid, queued_at=queued_at)


def _batches(items: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, BATCH_SIZE)):
        yield batch


class RefreshQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def send(self, connection_ids: Iterable[str], *, queued_at: int) -> tuple[int, int]:
        """Queue in batches of ten; returns (sent, failed). A failed entry is retried once;
        what still fails waits for the next tick, which finds it due again."""
        sent = failed = 0
        for batch in _batches(connection_ids):
            entries = [{"Id": str(i), "MessageBody": encode(cid, queued_at)} for i, cid in enumerate(batch)]
            for attempt in range(2):
                try:
                    result = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except (ClientError, BotoCoreError):
                    if attempt == 1:
                        raise DependencyUnavailable("SQS could not be written") from None
                    continue
                failed_ids = {f["Id"] for f in result.get("Failed", [])}
                sent += len(entries) - len(failed_ids)
                entries = [e for e in entries if e["Id"] in failed_ids]
                if not entries:
                    break
            if entries:
                failed += len(entries)
                logger.warning("refresh messages not queued", count=len(entries))
        return sent, failed
