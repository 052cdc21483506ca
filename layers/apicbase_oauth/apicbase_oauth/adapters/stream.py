"""The connections table's DynamoDB stream: its records parsed into connection changes, and the
records of a failed batch read back for a replay.

A record's images hold the whole item, the sealed tokens included. Only the attributes in
``_FIELDS`` are ever read from them (an allow-list): nothing else can reach an event, a log line
or an error. Records come from outside the function (Lambda's event, the stream's API, a dead-letter
message that an operator hands back), so each is checked for exactly our shape first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import DependencyUnavailable, InvalidRequest, StreamRecordsExpired
from ..model import is_connection_id

CONNECTION_PREFIX = "CONN#"
MAX_TEXT = 256
_EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SEQUENCE_RE = re.compile(r"[0-9]{1,40}")
_SHARD_ID_RE = re.compile(r"shardId-[A-Za-z0-9_-]{1,80}")
_STREAM_LABEL_RE = re.compile(r"[0-9T:.-]{1,40}")
# A stream record arrives as one of these; nothing else is one of ours.
_EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
# GetRecords calls per replayed batch: a batch holds at most 10,000 records (the event source's
# largest batch), a call returns up to 1,000, and an open shard may answer a page with none.
MAX_READS = 40


def _invalid(what: str) -> InvalidRequest:
    return InvalidRequest(f"stream record: {what}", code="invalid_stream_record")


@dataclass(frozen=True)
class ConnectionImage:
    """The allow-listed attributes of a connection item as the stream saw it."""

    connection_id: str
    application: str
    client_id: str
    status: str
    version: int
    username: str | None = None
    previous_username: str | None = None
    scope: str | None = None
    source: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    reauthorization_reason: str | None = None
    refresh_count: int = 0


@dataclass(frozen=True)
class ConnectionChange:
    """One stream record of a ``CONN#`` item: the item before and after (None: no connection)."""

    event_id: str  # the stream record's own id: the same on every delivery of the record
    sequence_number: str
    connection_id: str
    at: float  # when the change was written (the record's ApproximateCreationDateTime)
    old: ConnectionImage | None
    new: ConnectionImage | None


# name in the item -> (name in ConnectionImage, DynamoDB type); `scope` is a reserved word there.
_FIELDS: dict[str, tuple[str, str]] = {
    "connection_id": ("connection_id", "S"),
    "application": ("application", "S"),
    "client_id": ("client_id", "S"),
    "status": ("status", "S"),
    "version": ("version", "N"),
    "username": ("username", "S"),
    "previous_username": ("previous_username", "S"),
    "granted_scope": ("scope", "S"),
    "source": ("source", "S"),
    "consecutive_failures": ("consecutive_failures", "N"),
    "last_error": ("last_error", "S"),
    "reauthorization_reason": ("reauthorization_reason", "S"),
    "refresh_count": ("refresh_count", "N"),
}
_REQUIRED = ("connection_id", "application", "client_id", "status", "version")


def _value(attribute: Any, kind: str, name: str) -> str | int:
    if not isinstance(attribute, Mapping) or set(attribute) != {kind}:
        raise _invalid(f"{name} is not of type {kind}")
    raw = attribute[kind]
    if kind == "N":
        if not isinstance(raw, str) or not _SEQUENCE_RE.fullmatch(raw):
            raise _invalid(f"{name} is not a whole number")
        return int(raw)
    if not isinstance(raw, str) or len(raw) > MAX_TEXT or not raw.isprintable():
        raise _invalid(f"{name} is not a short printable string")
    return raw


def _image(raw: Any, connection_id: str) -> ConnectionImage | None:
    """The connection in an image; None when there is no image or the item is not a connection
    (one that holds a grant: an item left without tokens, a tombstone, is a connection no more).
    Whether ``tokens`` is there is all that is looked at of it."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _invalid("an image is not a map")
    entity = raw.get("entity")
    if not (isinstance(entity, Mapping) and entity.get("S") == "connection") or "tokens" not in raw:
        return None
    values: dict[str, Any] = {}
    for name, (attribute, kind) in _FIELDS.items():
        if name in raw:
            values[attribute] = _value(raw[name], kind, name)
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        raise _invalid(f"the connection has no {', '.join(missing)}")
    if values["connection_id"] != connection_id:
        raise _invalid("the connection's id is not its key's")
    # An empty previous_username means none (what a first grant writes).
    values["previous_username"] = values.get("previous_username") or None
    return ConnectionImage(**values)


def _timestamp(value: Any) -> float:
    """Lambda's event says seconds since the epoch; the stream's API (boto3) a datetime."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise _invalid("ApproximateCreationDateTime is not a time")
    try:
        seconds = float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise _invalid("ApproximateCreationDateTime is not a time") from None
    if not 0 <= seconds < 2**33:
        raise _invalid("ApproximateCreationDateTime is out of range")
    return seconds


def parse_record(raw: Any) -> ConnectionChange | None:
    """A stream record as a connection change; None for the records of other items (states,
    budgets, parked pairs). Raises InvalidRequest for a record that is not of our shape."""
    if not isinstance(raw, Mapping):
        raise _invalid("not a map")
    body = raw.get("dynamodb")
    if not isinstance(body, Mapping):
        raise _invalid("no dynamodb section")
    keys = body.get("Keys")
    pk = keys.get("pk") if isinstance(keys, Mapping) else None
    key = pk.get("S") if isinstance(pk, Mapping) else None
    if not isinstance(key, str):
        raise _invalid("no string key pk")
    if not key.startswith(CONNECTION_PREFIX):
        return None
    connection_id = key.removeprefix(CONNECTION_PREFIX)
    event_id, name, sequence = raw.get("eventID"), raw.get("eventName"), body.get("SequenceNumber")
    if not is_connection_id(connection_id):
        raise _invalid("the key is not a connection id")
    if not isinstance(event_id, str) or not _EVENT_ID_RE.fullmatch(event_id):
        raise _invalid("eventID is not an id")
    if name not in _EVENT_NAMES:
        raise _invalid("eventName is not INSERT, MODIFY or REMOVE")
    if not isinstance(sequence, str) or not _SEQUENCE_RE.fullmatch(sequence):
        raise _invalid("SequenceNumber is not a number")
    return ConnectionChange(
        event_id=event_id,
        sequence_number=sequence,
        connection_id=connection_id,
        at=_timestamp(body.get("ApproximateCreationDateTime")),
        old=_image(body.get("OldImage"), connection_id),
        new=_image(body.get("NewImage"), connection_id),
    )


# --- failed batches: the event source's on-failure records, and the records they name ----------
@dataclass(frozen=True)
class FailedBatch:
    """What Lambda's event source sends its on-failure destination (``DDBStreamBatchInfo``):
    where the records of a batch it gave up on are, not the records themselves."""

    stream_arn: str
    shard_id: str
    first: int
    last: int


def parse_failed_batch(body: Any, table_name: str) -> FailedBatch:
    """A dead-letter message of exactly that shape, naming this table's own stream."""
    if not isinstance(body, str) or len(body) > 16 * 1024:
        raise InvalidRequest("failed batch: not a short string", code="invalid_message")
    try:
        info = json.loads(body).get("DDBStreamBatchInfo")
    except (ValueError, AttributeError):
        raise InvalidRequest("failed batch: not a JSON object", code="invalid_message") from None
    if not isinstance(info, dict):
        raise InvalidRequest("failed batch: no DDBStreamBatchInfo", code="invalid_message")
    arn, shard = info.get("streamArn"), info.get("shardId")
    first, last = info.get("startSequenceNumber"), info.get("endSequenceNumber")
    parts = arn.split(":", 5) if isinstance(arn, str) else []
    resource = parts[5].split("/") if len(parts) == 6 else []
    if not (
        len(resource) == 4
        and parts[0] == "arn"
        and parts[2] == "dynamodb"
        and resource[:3] == ["table", table_name, "stream"]
        and _STREAM_LABEL_RE.fullmatch(resource[3])
    ):
        raise InvalidRequest("failed batch: not this table's stream", code="invalid_message")
    if not (isinstance(shard, str) and _SHARD_ID_RE.fullmatch(shard)):
        raise InvalidRequest("failed batch: invalid shardId", code="invalid_message")
    numbers = [int(n) for n in (first, last) if isinstance(n, str) and _SEQUENCE_RE.fullmatch(n)]
    if len(numbers) != 2 or numbers[0] > numbers[1]:
        raise InvalidRequest("failed batch: invalid sequence numbers", code="invalid_message")
    return FailedBatch(stream_arn=str(arn), shard_id=shard, first=numbers[0], last=numbers[1])


@dataclass
class StreamReader:
    """Reads the records of a failed batch back from the stream, which keeps them 24 hours."""

    client: Any
    max_reads: int = field(default=MAX_READS)

    def read(self, batch: FailedBatch) -> list[dict[str, Any]]:
        try:
            iterator = self.client.get_shard_iterator(
                StreamArn=batch.stream_arn,
                ShardId=batch.shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=str(batch.first),
            )["ShardIterator"]
            records: list[dict[str, Any]] = []
            for _ in range(self.max_reads):
                page = self.client.get_records(ShardIterator=iterator, Limit=1000)
                for record in page.get("Records", []):
                    if int(record["dynamodb"]["SequenceNumber"]) > batch.last:
                        return records
                    records.append(record)
                iterator = page.get("NextShardIterator")
                if not iterator or (records and int(records[-1]["dynamodb"]["SequenceNumber"]) >= batch.last):
                    return records
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"TrimmedDataAccessException", "ResourceNotFoundException"}:
                raise StreamRecordsExpired("the stream no longer holds these records (it keeps 24 hours)") from None
            raise DependencyUnavailable(f"DynamoDB Streams failed ({code})") from None
        except BotoCoreError:
            raise DependencyUnavailable("DynamoDB Streams could not be reached") from None
        raise DependencyUnavailable("the stream did not reach the batch's last record")


@dataclass(frozen=True)
class DeadLetter:
    receipt_handle: str
    body: str


@dataclass
class FailedBatches:
    """The event source's dead-letter queue (its on-failure destination)."""

    sqs: Any
    queue_url: str

    def receive(self, *, visibility_seconds: int) -> list[DeadLetter]:
        try:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility_seconds
            ).get("Messages", [])
        except (ClientError, BotoCoreError):
            raise DependencyUnavailable("SQS could not be read") from None
        return [DeadLetter(m["ReceiptHandle"], m.get("Body", "")) for m in messages]

    def delete(self, letter: DeadLetter) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=letter.receipt_handle)
        except (ClientError, BotoCoreError):
            raise DependencyUnavailable("SQS could not be written") from None
