"""The webhook as EventBridge's API destination delivers it, from the template's ``WebhookRule``.

A rule with the template's event pattern on moto's default bus sends each matching event to a
queue that stands in for the API destination's own; ``WebhookDelivery`` takes them from there and
POSTs each, as published (``version``, ``id``, ``detail-type``, ``source``, ``account``, ``time``,
``region``, ``resources``, ``detail``), with the Connection's header (``x-api-key``) and a
5-second timeout. Like EventBridge it retries, with backoff, what failed with 401, 407, 409, 429,
5xx or no answer, for the target's RetryPolicy (attempts and age); anything else, and what
retries did not deliver, goes to the webhook's dead-letter queue with EventBridge's attributes.
The queue keeps the retry state: a failed delivery is put back with a visibility timeout.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local import template as tpl
from local.aws import queue_url
from local.lambda_context import ACCOUNT

RULE = "WebhookRule"
TIMEOUT_SECONDS = 5  # an API destination's request timeout
RETRIED_STATUSES = frozenset({401, 407, 409, 429})
MAX_BACKOFF_SECONDS = 60
POLL_WAIT_SECONDS = 1

Log = Callable[[str], None]
Post = Callable[[str, bytes, Mapping[str, str]], int]  # url, body, headers -> HTTP status


def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (the integrator's URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass(frozen=True)
class Webhook:
    url: str
    api_key: str
    queue_url: str  # the stand-in for the API destination
    dead_letter_url: str
    max_attempts: int  # the first delivery and the retries
    max_age: float


def provision(session: Any, template: dict[str, Any], refs: Mapping[str, str], *, api_key: str) -> Webhook:
    """The rule (the template's pattern) on moto's default bus, its target queue, the retry policy."""
    rule = tpl.resource(template, RULE)["Properties"]
    target = rule["Targets"][0]
    name = f"{refs['AWS::StackName']}-{RULE}"
    sqs = session.client("sqs")
    delivery_url = sqs.create_queue(QueueName=f"{name}-delivery")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=delivery_url, AttributeNames=["QueueArn"])["Attributes"]
    events = session.client("events")
    pattern = tpl.resolve(rule["EventPattern"], dict(refs))
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), EventBusName=rule.get("EventBusName", "default"))
    events.put_targets(Rule=name, Targets=[{"Id": target["Id"], "Arn": attributes["QueueArn"]}])
    policy = target.get("RetryPolicy", {})
    return Webhook(
        url=str(tpl.resolve({"Ref": "WebhookUrl"}, dict(refs))),
        api_key=api_key,
        queue_url=delivery_url,
        dead_letter_url=queue_url(target["DeadLetterConfig"]["Arn"], dict(refs)),
        max_attempts=1 + int(policy.get("MaximumRetryAttempts", 185)),
        max_age=float(policy.get("MaximumEventAgeInSeconds", 86400)),
    )


ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


def published(body: str) -> bytes:
    """The event as EventBridge publishes it, in its order (moto's copy has no ``account``)."""
    event = {"account": ACCOUNT, **json.loads(body)}
    return json.dumps({key: event[key] for key in ENVELOPE}, separators=(",", ":")).encode()


class WebhookDelivery:
    def __init__(
        self,
        webhook: Webhook,
        *,
        sqs: Any,
        region: str,
        stack_name: str,
        log: Log,
        send: Post = post,
        now: Callable[[], float] = time.time,
        backoff: Callable[[int], int] = lambda attempt: min(2 ** (attempt - 1), MAX_BACKOFF_SECONDS),
    ) -> None:
        self.webhook = webhook
        self._sqs = sqs
        self._log = log
        self._send = send
        self._now = now
        self._backoff = backoff
        self._rule_arn = f"arn:aws:events:{region}:{ACCOUNT}:rule/{stack_name}-{RULE}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self.delivered = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stopping.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=POLL_WAIT_SECONDS + TIMEOUT_SECONDS + 5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once(wait_seconds=POLL_WAIT_SECONDS)
            except Exception as exc:  # e.g. moto stopping underneath us at shutdown
                if not self._stopping.is_set():
                    self._log(f"webhook: {type(exc).__name__}")
                    self._stopping.wait(1)

    def poll_once(self, *, wait_seconds: int = 0) -> int:
        """Deliver what is due now; how many messages were taken."""
        messages = self._sqs.receive_message(
            QueueUrl=self.webhook.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        ).get("Messages", [])
        for message in messages:
            self._deliver(message)
        return len(messages)

    def _deliver(self, message: dict[str, Any]) -> None:
        attempt = int(message["Attributes"]["ApproximateReceiveCount"])
        age = self._now() - int(message["Attributes"]["SentTimestamp"]) / 1000
        body = published(message["Body"])
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Amazon/EventBridge/ApiDestinations",
            "x-api-key": self.webhook.api_key,
        }
        try:
            status: int | None = self._send(self.webhook.url, body, headers)
        except OSError:  # refused, reset, timed out: no answer
            status = None
        if status is not None and 200 <= status < 300:
            self.delivered += 1
            self._done(message)
            return
        retried = status is None or status in RETRIED_STATUSES or status >= 500
        exhausted = attempt >= self.webhook.max_attempts
        if retried and not exhausted and age < self.webhook.max_age:
            self._sqs.change_message_visibility(
                QueueUrl=self.webhook.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self._backoff(attempt),
            )
            return
        condition = (
            "MaximumRetryAttemptsExhausted"
            if retried and exhausted
            else "MaximumEventAgeExhausted"
            if retried
            else "NotRetried"
        )
        self._log(f"webhook: event not delivered (HTTP {status}, {condition}); it goes to the dead-letter queue")
        self._sqs.send_message(
            QueueUrl=self.webhook.dead_letter_url,
            MessageBody=body.decode(),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in {
                    "RULE_ARN": self._rule_arn,
                    "ERROR_CODE": "SDK_CLIENT_ERROR" if status is None else f"HTTP_{status}",
                    "EXHAUSTED_RETRY_CONDITION": condition,
                    "RETRY_ATTEMPTS": str(attempt - 1),
                }.items()
            },
        )
        self._done(message)

    def _done(self, message: dict[str, Any]) -> None:
        self._sqs.delete_message(QueueUrl=self.webhook.queue_url, ReceiptHandle=message["ReceiptHandle"])
