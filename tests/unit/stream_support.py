"""The connection events end to end in moto: the table's stream fed to the events function's real
handler by the local run's event source mapping (local/streams.py), and an integrator's consumer:
an EventBridge rule on the broker's source, targeting an SQS queue."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from local.streams import EventSource, StreamPoller

from tests.conftest import REGION, Aws

EVENTS_FUNCTION = "ConnectionEventsFunction"


class Consumer:
    """What an integrator's rule on ``source: [{prefix: apicbase-oauth-broker.}]`` receives."""

    def __init__(self, aws: Aws) -> None:
        self.sqs = aws.session.client("sqs")
        self.queue_url = self.sqs.create_queue(QueueName="integrator-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]
        events = aws.session.client("events")
        events.put_rule(Name="integrator", EventPattern=json.dumps({"source": [{"prefix": "apicbase-oauth-broker."}]}))
        events.put_targets(Rule="integrator", Targets=[{"Id": "queue", "Arn": arn["QueueArn"]}])
        self.received: list[dict[str, Any]] = []

    def receive(self) -> list[dict[str, Any]]:
        """Every copy received so far, duplicates included."""
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return self.received
            for message in messages:
                event = json.loads(message["Body"])
                if "event_id" in event["detail"]:  # PRE-TAG: the flows' own copies go with their PutEvents
                    self.received.append(event)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def deduplicated(self) -> list[dict[str, Any]]:
        """One event per ``detail.event_id``, as an integrator keeps them, in the order first seen."""
        return list({event["detail"]["event_id"]: event for event in reversed(self.receive())}.values())[::-1]

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [event for event in self.deduplicated() if event["detail-type"] == detail_type]


class Feed:
    """The event source mapping of the template, invoking the events handler in this process.
    ``invoke`` may be replaced to make an invocation fail; ``drain`` delivers what is new."""

    def __init__(
        self,
        aws: Aws,
        template: dict[str, Any],
        handler: Callable[[dict[str, Any]], Any],
        *,
        session: Any = None,
        **source: Any,
    ) -> None:
        """``session``: where the mapping's own AWS clients come from (it calls with the function's role)."""
        session = session or aws.session
        self.handler = handler
        self.invocations: list[dict[str, Any]] = []
        mapping = EventSource.of(template, EVENTS_FUNCTION, aws.refs)
        assert mapping is not None
        self.source = dataclasses.replace(mapping, **source)
        self.poller = StreamPoller(
            source=self.source,
            invoke=self._invoke,
            streams=session.client("dynamodbstreams"),
            sqs=session.client("sqs"),
            stream_arn=aws.refs["ConnectionsTable.StreamArn"],
            region=REGION,
            log=lambda line: None,
            sleep=lambda seconds: None,
        )

    def _invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        assert logical_id == EVENTS_FUNCTION
        self.invocations.append(event)
        return self.handler(event)

    def drain(self) -> None:
        while self.poller.poll_once():
            pass


@pytest.fixture
def events_function(load_handler) -> ModuleType:
    """The events function's handler module, as Lambda loads it (its DEPS can be adjusted)."""
    return load_handler(EVENTS_FUNCTION)


@pytest.fixture
def events_handler(events_function, lambda_context) -> Callable[[dict[str, Any]], Any]:
    return lambda event: events_function.lambda_handler(event, lambda_context)


@pytest.fixture
def consumer(aws: Aws) -> Consumer:
    return Consumer(aws)


@pytest.fixture
def feed(aws: Aws, template: dict[str, Any], events_handler) -> Feed:
    return Feed(aws, template, events_handler)
