"""The refresh schedule as AWS runs it: a timer invoking the scheduler function (EventBridge
Scheduler) and pollers feeding the worker function from the queue (Lambda's SQS event source:
batches, as many at once as the worker's pool has processes, with ReportBatchItemFailures: only
the messages the handler did not report failed are deleted; the others, and a whole batch whose
invocation failed, come back after the visibility timeout and go to the DLQ after
maxReceiveCount receives, both moto's)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from local.aws import ACCOUNT

POLL_WAIT_SECONDS = 1  # short long-polls, so that stopping never waits long

Log = Callable[[str], None]


def scheduled_event(region: str, schedule_name: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": region,
        "resources": [f"arn:aws:scheduler:{region}:{ACCOUNT}:schedule/default/{schedule_name}"],
        "detail": {},
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source sends for a batch of received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def failed_message_ids(response: Any) -> set[str]:
    failures = response.get("batchItemFailures", []) if isinstance(response, dict) else []
    return {item["itemIdentifier"] for item in failures}


class _Loop(threading.Thread):
    """Runs ``step`` until stopped; a failing step is logged (type only) and the loop goes on."""

    def __init__(self, name: str, step: Callable[[], None], stopping: threading.Event, log: Log) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._stopping = stopping
        self._log = log

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as exc:  # e.g. moto stopping underneath us at shutdown
                if not self._stopping.is_set():
                    # A pool's FunctionError says what happened to the invocation (never request data).
                    self._log(f"{self.name}: {type(exc).__name__} {getattr(exc, 'detail', '')}".rstrip())
                    self._stopping.wait(1)


class RefreshSchedule:
    """Both loops; ``invoke(logical_id, event)`` calls a function the way Lambda would."""

    def __init__(
        self,
        *,
        invoke: Callable[[str, dict[str, Any]], Any],
        sqs: Any,
        queue_url: str,
        region: str,
        tick_seconds: float,
        batch_size: int,
        pollers: int,
        scheduler_function: str,
        worker_function: str,
        log: Log,
    ) -> None:
        self._invoke = invoke
        self._sqs = sqs
        self._queue_url = queue_url
        self._region = region
        self._tick_seconds = tick_seconds
        self._batch_size = max(1, min(batch_size, 10))
        self._scheduler_function = scheduler_function
        self._worker_function = worker_function
        self._queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._stopping = threading.Event()
        self._threads = [
            _Loop("refresh-schedule", self._tick, self._stopping, log),
            *(_Loop(f"refresh-queue-poller-{n}", self.poll_once, self._stopping, log) for n in range(max(1, pollers))),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stopping.set()
        for thread in self._threads if wait else ():
            thread.join(timeout=POLL_WAIT_SECONDS + 5)

    def _tick(self) -> None:
        if not self._stopping.wait(self._tick_seconds):
            self._invoke(self._scheduler_function, scheduled_event(self._region, self._scheduler_function))

    def poll_once(self) -> None:
        """Receive one batch, hand it to the worker, delete what it did not report as failed."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=POLL_WAIT_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return
        response = self._invoke(self._worker_function, sqs_event(messages, self._queue_arn, self._region))
        failed = failed_message_ids(response)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            # Failed messages stay: they come back after the visibility timeout, then go to the DLQ.
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
