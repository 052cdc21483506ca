"""Lambda's event source mapping for a DynamoDB stream, as AWS runs it, from the template's
``AWS::Lambda::EventSourceMapping``: the stream is polled four times a second from its first
record; the records the mapping's FilterCriteria match go to the function in order, in batches of
at most BatchSize, one batch at a time. A record the function reports failed
(ReportBatchItemFailures) is delivered again with the records after it; a batch whose invocation
failed is split in two (BisectBatchOnFunctionError) and retried. After MaximumRetryAttempts
retries, or once its first record is MaximumRecordAgeInSeconds old, a batch is given up: Lambda's
on-failure record (where the records are, not the records) goes to the destination queue, and the
stream moves on.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local import iam
from local import template as tpl
from local.aws import queue_url
from local.lambda_context import ACCOUNT

POLL_SECONDS = 0.25  # Lambda polls a DynamoDB stream's shards four times a second
# What Lambda checks of the function's role when the mapping is created ("Cannot access stream
# ...: ensure the role can perform GetRecords, GetShardIterator, DescribeStream, and ListStreams").
STREAM_ACTIONS = ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams")
STREAM_RETENTION_SECONDS = 24 * 3600
MAX_RETRY_PAUSE_SECONDS = 5.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class EventSource:
    """A function's stream event source mapping, from the template."""

    function: str
    batch_size: int
    max_retries: int  # -1: until the record is too old
    max_record_age: float  # seconds
    bisect: bool
    report_failures: bool
    patterns: tuple[dict[str, Any], ...]
    on_failure: str | None  # the destination queue, by its URL

    @classmethod
    def of(cls, template: dict[str, Any], function: str, refs: Mapping[str, str]) -> EventSource | None:
        for resource in tpl.resources_of_type(template, "AWS::Lambda::EventSourceMapping").values():
            props = resource["Properties"]
            if props.get("FunctionName") != {"Ref": function}:
                continue
            age = int(props.get("MaximumRecordAgeInSeconds", -1))
            destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            return cls(
                function=function,
                batch_size=int(props.get("BatchSize", 100)),
                max_retries=int(props.get("MaximumRetryAttempts", -1)),
                max_record_age=STREAM_RETENTION_SECONDS if age < 0 else age,
                bisect=bool(props.get("BisectBatchOnFunctionError", False)),
                report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                patterns=tuple(json.loads(f["Pattern"]) for f in props.get("FilterCriteria", {}).get("Filters", [])),
                on_failure=queue_url(destination, dict(refs)) if destination else None,
            )
        return None


def check_role(statements: list[iam.Statement], stream_arn: str) -> list[iam.Decision]:
    """Lambda's check of the role at the mapping's creation: each of STREAM_ACTIONS on the stream."""
    return [iam.evaluate(statements, iam.Call(action, stream_arn)) for action in STREAM_ACTIONS]


def matches(pattern: Any, value: Any) -> bool:
    """The part of Lambda's filter syntax the template uses: nested keys, and a list of exact
    values or ``{"prefix": ...}`` rules at the leaves."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches(p, value[k]) for k, p in pattern.items())
    return any(
        (isinstance(rule, dict) and isinstance(value, str) and value.startswith(rule["prefix"])) or rule == value
        for rule in pattern
    )


def _lambda_value(value: Any) -> Any:
    """A DynamoDB JSON value as Lambda's event has it: binary as base64 text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {k: _lambda_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_value(v) for v in value]
    return value


def lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A record from GetRecords (boto3) as Lambda's event source delivers it."""
    body = _lambda_value({k: v for k, v in record["dynamodb"].items() if k != "ApproximateCreationDateTime"})
    created = record["dynamodb"].get("ApproximateCreationDateTime")
    body["ApproximateCreationDateTime"] = created.timestamp() if isinstance(created, datetime) else time.time()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": body,
        "eventSourceARN": stream_arn,
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class StreamPoller:
    """Feeds ``source.function`` from the stream; ``invoke(logical_id, event)`` calls it as Lambda
    would and raises when the invocation fails. ``poll_once`` does one round (tests call it)."""

    def __init__(
        self,
        *,
        source: EventSource,
        invoke: Callable[[str, dict[str, Any]], Any],
        streams: Any,
        sqs: Any,
        stream_arn: str,
        region: str,
        log: Log,
        sleep: Callable[[float], None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._invoke = invoke
        self._streams = streams
        self._sqs = sqs
        self._stream_arn = stream_arn
        self._region = region
        self._log = log
        self._now = now
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._iterators: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name=f"stream-poller-{source.function}", daemon=True)
        self.given_up = 0  # batches sent to the on-failure destination

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stopping.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=MAX_RETRY_PAUSE_SECONDS + 5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.poll_once():
                    self._stopping.wait(POLL_SECONDS)
            except Exception as exc:  # e.g. moto stopping underneath us at shutdown
                if not self._stopping.is_set():
                    self._log(f"stream poller: {type(exc).__name__} {getattr(exc, 'detail', '')}".rstrip())
                    self._stopping.wait(1)

    def poll_once(self) -> int:
        """Read what the shards have now and deliver the matching records; how many were read."""
        read = 0
        shards = self._streams.describe_stream(StreamArn=self._stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self._stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            page = self._streams.get_records(ShardIterator=self._iterators[shard_id], Limit=1000)
            records = [lambda_record(r, self._stream_arn, self._region) for r in page.get("Records", [])]
            read += len(records)
            patterns = self.source.patterns
            wanted = [r for r in records if not patterns or any(matches(p, r) for p in patterns)]
            for start in range(0, len(wanted), self.source.batch_size):
                if self._stopping.is_set():
                    return read  # undelivered: at shutdown, as when Lambda's pollers stop
                self._deliver(shard_id, wanted[start : start + self.source.batch_size])
            if page.get("NextShardIterator"):
                self._iterators[shard_id] = page["NextShardIterator"]
        return read

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]]) -> None:
        """One batch until it is done or given up; the next batch waits, as on a shard."""
        parts, retries = [batch], 0
        while parts and not self._stopping.is_set():
            part = parts[0]
            failed_at = self._attempt(part)
            if failed_at is None:
                parts.pop(0)
                continue
            if failed_at > 0:
                parts[0] = part = part[failed_at:]  # the records before it are done
            elif failed_at < 0 and self.source.bisect and len(part) > 1:
                parts[0:1] = [part[: len(part) // 2], part[len(part) // 2 :]]  # not a retry, for Lambda
                continue
            retries += 1
            oldest = part[0]["dynamodb"]["ApproximateCreationDateTime"]
            exhausted = 0 <= self.source.max_retries < retries
            if exhausted or self._now() - oldest > self.source.max_record_age:
                self._give_up(shard_id, part, "RetryAttemptsExhausted" if exhausted else "RecordAgeExceeded", retries)
                parts.pop(0)
                continue
            self._sleep(min(0.25 * 2 ** (retries - 1), MAX_RETRY_PAUSE_SECONDS))

    def _attempt(self, part: list[dict[str, Any]]) -> int | None:
        """None: done; the index of the first record to deliver again; -1: the invocation failed."""
        try:
            response = self._invoke(self.source.function, {"Records": part})
        except Exception as exc:  # the pool's FunctionError: a crash, a timeout, an exception
            self._log(f"{self.source.function}: {type(exc).__name__} {getattr(exc, 'detail', '')}".rstrip())
            return -1
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not self.source.report_failures or not failures:
            return None
        sequences = [r["dynamodb"]["SequenceNumber"] for r in part]
        identifier = failures[0].get("itemIdentifier") if isinstance(failures[0], dict) else None
        # An identifier that is not one of the batch's fails the whole batch, as on Lambda.
        return sequences.index(identifier) if identifier in sequences else 0

    def _give_up(self, shard_id: str, part: list[dict[str, Any]], condition: str, retries: int) -> None:
        self.given_up += 1
        first, last = part[0]["dynamodb"], part[-1]["dynamodb"]
        self._log(
            f"{self.source.function}: gave up a batch of {len(part)} stream record(s) ({condition}); "
            "its on-failure record goes to the dead-letter queue"
        )
        if not self.source.on_failure:
            return
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{self._region}:{ACCOUNT}:function:{self.source.function}",
                "condition": condition,
                "approximateInvokeCount": retries + 1,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": _iso(self._now()),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first["ApproximateCreationDateTime"]),
                "approximateArrivalOfLastRecord": _iso(last["ApproximateCreationDateTime"]),
                "batchSize": len(part),
                "streamArn": self._stream_arn,
            },
        }
        self._sqs.send_message(QueueUrl=self.source.on_failure, MessageBody=json.dumps(record))
