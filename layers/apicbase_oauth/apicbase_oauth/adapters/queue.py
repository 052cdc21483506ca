"""SQS adapter for refresh messages.

- ``{"connection_id": "...", "queued_at": 1700000000}``: refresh this connection if it is due.
- ``... "rescue": true``: apply the rescue item parked for this connection (the scheduler's sweep).
- ``... "rescue": {...}``: a parked pair itself (sealed, base64), when the table could not hold it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import DependencyUnavailable, InvalidRequest
from ..model import Rescue, immutable, is_connection_id
from ..observability import logger

BATCH_SIZE = 10  # SQS SendMessageBatch's maximum
# A rescue carries a sealed pair: two tokens of MAX_TOKEN_LENGTH make about 23 KiB in base64.
MAX_MESSAGE_BYTES = 32 * 1024
_RESCUE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "tokens": str,
    "base_version": int,
    "application": str,
    "client_id": str,
    "expires_at": int,
    "scope": (str, type(None)),
    "username": (str, type(None)),
    "source": str,
    "parked_at": int,
    "generation": str,
}
# Messages parked before generations existed carry none: they are fenced by version and time alone.
_OPTIONAL_RESCUE_FIELDS = {"generation": ""}


@immutable
class RefreshMessage:
    connection_id: str
    queued_at: int
    sweep: bool = False  # apply the parked rescue item
    rescue: Rescue | None = None  # a parked pair carried by the message itself


def encode(connection_id: str, queued_at: int, *, sweep: bool = False) -> str:
    message: dict[str, Any] = {"connection_id": connection_id, "queued_at": queued_at}
    if sweep:
        message["rescue"] = True
    return json.dumps(message, separators=(",", ":"))


def encode_rescue(rescue: Rescue, queued_at: int) -> str:
    fields = {name: getattr(rescue, name) for name in _RESCUE_FIELDS}
    fields["tokens"] = base64.b64encode(rescue.tokens).decode()
    message = {"connection_id": rescue.connection_id, "queued_at": queued_at, "rescue": fields}
    return json.dumps(message, separators=(",", ":"))


def _decode_rescue(connection_id: str, fields: Any) -> Rescue:
    if isinstance(fields, dict):
        fields = {**_OPTIONAL_RESCUE_FIELDS, **fields}
    if not isinstance(fields, dict) or set(fields) != set(_RESCUE_FIELDS):
        raise InvalidRequest("rescue message does not have our fields", code="invalid_message")
    for name, kind in _RESCUE_FIELDS.items():
        if not isinstance(fields[name], kind) or isinstance(fields[name], bool):
            raise InvalidRequest(f"rescue message has an invalid {name}", code="invalid_message")
    if fields["kind"] not in ("refresh", "grant") or fields["base_version"] < 0:
        raise InvalidRequest("rescue message has an invalid kind or version", code="invalid_message")
    try:
        tokens = base64.b64decode(fields["tokens"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("rescue message has invalid tokens", code="invalid_message") from None
    return Rescue(connection_id=connection_id, **{**fields, "tokens": tokens})


def decode(body: Any) -> RefreshMessage:
    """Only messages of exactly our shape; anything else is a poison message."""
    if not isinstance(body, str) or len(body) > MAX_MESSAGE_BYTES:
        raise InvalidRequest("refresh message is not a short string", code="invalid_message")
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidRequest("refresh message is not JSON", code="invalid_message") from None
    if not isinstance(data, dict) or not {"connection_id", "queued_at"} <= set(data) <= {
        "connection_id",
        "queued_at",
        "rescue",
    }:
        raise InvalidRequest("refresh message does not have our fields", code="invalid_message")
    cid, queued_at = data["connection_id"], data["queued_at"]
    if not isinstance(cid, str) or not is_connection_id(cid):
        raise InvalidRequest("refresh message has an invalid connection_id", code="invalid_message")
    if isinstance(queued_at, bool) or not isinstance(queued_at, int) or queued_at < 0:
        raise InvalidRequest("refresh message has an invalid queued_at", code="invalid_message")
    rescue = data.get("rescue")
    if rescue is None:
        return RefreshMessage(connection_id=cid, queued_at=queued_at)
    if rescue is True:
        return RefreshMessage(connection_id=cid, queued_at=queued_at, sweep=True)
    return RefreshMessage(connection_id=cid, queued_at=queued_at, rescue=_decode_rescue(cid, rescue))


def _batches(items: Iterable[str]) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, BATCH_SIZE)):
        yield batch


class RefreshQueue:
    def __init__(self, sqs_client: Any, queue_url: str, *, must_land: Any = None) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        # A parked pair's copy goes through a client that tries once, briefly (custody retries).
        self.must_land = must_land or sqs_client

    def send_rescue(self, rescue: Rescue, *, queued_at: int) -> None:
        """One attempt (custody retries it under the deadline)."""
        try:
            self.must_land.send_message(QueueUrl=self.queue_url, MessageBody=encode_rescue(rescue, queued_at))
        except (ClientError, BotoCoreError):
            raise DependencyUnavailable("SQS could not be written") from None

    def send(self, connection_ids: Iterable[str], *, queued_at: int, sweep: bool = False) -> tuple[int, int]:
        """Queue in batches of ten; returns (sent, failed). A failed entry is retried once;
        what still fails waits for the next tick, which finds it due again."""
        sent = failed = 0
        for batch in _batches(connection_ids):
            entries = [
                {"Id": str(i), "MessageBody": encode(cid, queued_at, sweep=sweep)} for i, cid in enumerate(batch)
            ]
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
