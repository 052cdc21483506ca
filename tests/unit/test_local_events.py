"""The local run's stand-ins for what AWS runs around the events function: the stream's event
source mapping (local/streams.py) and the webhook's API destination (local/webhook.py), read from
template.yaml, on moto."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest
from local.stack import Config, StartupError
from local.streams import EventSource, matches
from local.webhook import WebhookDelivery
from local.webhook import provision as provision_webhook

from apicbase_oauth.adapters.events import CONNECTION_CREATED
from tests.conftest import REGION
from tests.unit.stream_support import EVENTS_FUNCTION, Feed, imported

API_KEY = "local-webhook-key"


def test_the_event_source_is_the_templates(aws, template) -> None:
    # Given the template's event source mapping, Then the local run reads its settings from it
    source = EventSource.of(template, EVENTS_FUNCTION, aws.refs)
    assert source is not None
    assert (source.batch_size, source.max_retries, source.max_record_age) == (100, 10000, 3600)
    assert (source.bisect, source.report_failures) == (True, True)
    assert source.on_failure == aws.refs["ConnectionEventsDeadLetterQueue"]


@pytest.mark.parametrize(("key", "delivered"), [("CONN#lib-1", True), ("STATE#abc", False), ("BUDGET#x#1", False)])
def test_only_connection_records_reach_the_function(aws, template, key, delivered) -> None:
    # Given the mapping's filter, When a record of an item with this key comes, Then it passes or not
    source = EventSource.of(template, EVENTS_FUNCTION, aws.refs)
    assert source is not None
    record = {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": key}}}}
    assert any(matches(pattern, record) for pattern in source.patterns) is delivered


def test_a_batch_too_old_goes_to_the_dead_letter_queue_as_lambdas_on_failure_record(
    aws, template, deps, apicbase, events_handler
) -> None:
    # Given a function that keeps failing, and records older than MaximumRecordAgeInSeconds
    def failing(event: dict[str, Any]) -> Any:
        raise RuntimeError("down")

    feed = Feed(aws, template, failing, bisect=False)
    feed.poller._now = lambda: 4e9  # a clock far past the records' creation
    imported(deps, apicbase)
    # When the stream is delivered
    feed.drain()
    # Then the batch was given up at once, and its on-failure record says where its records are
    sqs = aws.session.client("sqs")
    (message,) = sqs.receive_message(QueueUrl=aws.refs["ConnectionEventsDeadLetterQueue"])["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    info = record["DDBStreamBatchInfo"]
    assert info["streamArn"] == aws.refs["ConnectionsTable.StreamArn"]
    assert int(info["endSequenceNumber"]) - int(info["startSequenceNumber"]) + 1 == info["batchSize"]
    assert "tokens" not in message["Body"]  # where the records are, never what they hold


# --- the webhook ----------------------------------------------------------------------------
class Endpoint:
    """The integrator's webhook: answers the statuses given, in turn (None: no answer), then 200."""

    def __init__(self, *statuses: int | None) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.posts.append((url, body, dict(headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        if status is None:
            raise TimeoutError("no answer within the timeout")
        return status


@pytest.fixture
def webhook_refs(aws) -> dict[str, str]:
    sqs = aws.session.client("sqs")
    dead_letters = sqs.create_queue(QueueName="webhook-dlq")["QueueUrl"]
    return {
        **aws.refs,
        "WebhookUrl": "https://hooks.example.com/apicbase",
        "WebhookDeadLetterQueue": dead_letters,
    }


def deliver(aws, template, webhook_refs, endpoint: Endpoint, **policy: Any) -> tuple[WebhookDelivery, Any]:
    webhook = provision_webhook(aws.session, template, webhook_refs, api_key=API_KEY)
    webhook = dataclasses.replace(webhook, **policy)
    delivery = WebhookDelivery(
        webhook,
        sqs=aws.session.client("sqs"),
        region=REGION,
        stack_name=webhook_refs["AWS::StackName"],
        log=lambda line: None,
        send=endpoint,
        backoff=lambda attempt: 0,
    )
    aws.session.client("events").put_events(
        Entries=[
            {
                "Source": f"apicbase-oauth-broker.{webhook_refs['AWS::StackName']}",
                "DetailType": CONNECTION_CREATED,
                "Detail": json.dumps({"event_id": "r1.created", "connection_id": "lib-1"}),
            },
            {"Source": "someone.else", "DetailType": CONNECTION_CREATED, "Detail": "{}"},
        ]
    )
    while delivery.poll_once():
        pass
    return delivery, aws.session.client("sqs").receive_message(
        QueueUrl=webhook.dead_letter_url, MessageAttributeNames=["All"]
    ).get("Messages", [])


def test_the_webhook_gets_the_event_as_published_with_the_api_key(aws, template, webhook_refs) -> None:
    # Given a webhook that answers 200, When the broker's event and someone else's are put
    endpoint = Endpoint()
    delivery, dead = deliver(aws, template, webhook_refs, endpoint)
    # Then only the broker's event is POSTed, once, to the URL, with the key, as EventBridge has it
    ((url, body, headers),) = endpoint.posts
    event = json.loads(body)
    assert url == "https://hooks.example.com/apicbase"
    assert headers["x-api-key"] == API_KEY
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["detail"] == {"event_id": "r1.created", "connection_id": "lib-1"}
    assert (delivery.delivered, dead) == (1, [])


def test_a_failing_webhook_is_retried_until_it_answers(aws, template, webhook_refs) -> None:
    # Given a webhook that answers 503, then 429, then times out, then 200
    endpoint = Endpoint(503, 429, None)
    # When the event is delivered
    delivery, dead = deliver(aws, template, webhook_refs, endpoint)
    # Then it was POSTed four times, the same body each time, and delivered
    assert len(endpoint.posts) == 4
    assert len({body for _, body, _ in endpoint.posts}) == 1
    assert (delivery.delivered, dead) == (1, [])


@pytest.mark.parametrize(
    ("statuses", "condition"),
    [((400,), "NotRetried"), ((500, 500, 500), "MaximumRetryAttemptsExhausted")],
)
def test_what_is_not_delivered_goes_to_the_dead_letter_queue(aws, template, webhook_refs, statuses, condition) -> None:
    # Given a webhook that refuses the event, or fails more often than the retry policy allows
    endpoint = Endpoint(*statuses)
    # When the event is delivered with at most 3 attempts
    delivery, dead = deliver(aws, template, webhook_refs, endpoint, max_attempts=3)
    # Then it is in the webhook's dead-letter queue, as published, saying why
    (message,) = dead
    assert json.loads(message["Body"])["detail"]["event_id"] == "r1.created"
    assert message["MessageAttributes"]["EXHAUSTED_RETRY_CONDITION"]["StringValue"] == condition
    assert delivery.delivered == 0


@pytest.mark.parametrize(
    "env",
    [
        {"WEBHOOK_URL": "https://hooks.example.com/x"},
        {"WEBHOOK_URL": "http://hooks.example.com/x", "WEBHOOK_API_KEY": "k"},
    ],
    ids=["no-key", "plain-http-off-loopback"],
)
def test_the_local_run_refuses_a_webhook_it_could_not_deliver_as_aws_would(env) -> None:
    with pytest.raises(StartupError):
        Config.from_env(env)
