"""The queue pollers feed the worker as Lambda's SQS event source does: batches, partial batch
failures, the visibility timeout and the DLQ (moto's server on 127.0.0.1, a recording function)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from local.scheduler import RefreshSchedule
from local.stack import REGION, AtomicMoto

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 30


@pytest.fixture
def sqs() -> Iterator[Any]:
    moto = AtomicMoto("127.0.0.1", 0)
    moto.start()
    try:
        yield boto3.client(
            "sqs",
            region_name=REGION,
            endpoint_url=moto.url,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
    finally:
        moto.stop()


def queues(sqs: Any) -> tuple[str, str]:
    """A queue whose messages come back after a second and go to the DLQ on their second receive."""
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    queue = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "1", "RedrivePolicy": redrive})
    return queue["QueueUrl"], dlq


def feed(sqs: Any, bodies: list[str], invoke: Any, expected_in_dlq: int) -> tuple[list[str], list[list[str]]]:
    """Send ``bodies``, let two pollers feed ``invoke`` until the DLQ holds ``expected_in_dlq``
    messages; what reached the DLQ and every batch the function saw."""
    queue, dlq = queues(sqs)
    for body in bodies:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    seen: list[list[str]] = []

    def recording(function: str, event: dict[str, Any]) -> Any:
        seen.append([record["body"] for record in event["Records"]])
        return invoke(event)

    schedule = RefreshSchedule(
        invoke=recording,
        sqs=sqs,
        queue_url=queue,
        region=REGION,
        tick_seconds=3600,
        batch_size=10,
        pollers=2,
        scheduler_function="S",
        worker_function="W",
        log=lambda line: None,
    )
    schedule.start()
    in_dlq: list[str] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(in_dlq) < expected_in_dlq and time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            in_dlq += [m["Body"] for m in messages]
    finally:
        schedule.stop()
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None
    return in_dlq, seen


def test_a_message_reported_failed_comes_back_and_ends_in_the_dlq(sqs: Any) -> None:
    # Given a worker that reports the message "bad" failed and handles the others
    def invoke(event: dict[str, Any]) -> Any:
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "bad"]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    # When the pollers feed it "good" and "bad"
    in_dlq, seen = feed(sqs, ["good", "bad"], invoke, expected_in_dlq=1)

    # Then "good" was delivered once and deleted; "bad" came back after the visibility timeout
    # and went to the DLQ after its second receive
    delivered = [body for batch in seen for body in batch]
    assert (in_dlq, delivered.count("good"), delivered.count("bad")) == (["bad"], 1, 2)


def test_a_failed_invocation_returns_its_whole_batch(sqs: Any) -> None:
    # Given a worker that fails
    def invoke(event: dict[str, Any]) -> Any:
        raise RuntimeError("the function failed")

    # When the pollers feed it two messages
    in_dlq, seen = feed(sqs, ["one", "two"], invoke, expected_in_dlq=2)

    # Then both came back and went to the DLQ after their second receive
    delivered = [body for batch in seen for body in batch]
    assert (sorted(in_dlq), delivered.count("one"), delivered.count("two")) == (["one", "two"], 2, 2)
