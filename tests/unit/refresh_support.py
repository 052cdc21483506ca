"""Helpers shared by the refresh tests: seeding connections, watching AWS calls, capturing
events, logs and metrics, and making moto's DynamoDB atomic per item under threads."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.dynamodb.responses import DynamoHandler

from apicbase_oauth.deps import Deps
from apicbase_oauth.model import Connection, Grant, TokenPair
from tests import fakes
from tests.conftest import Clock

WEEK = 604800


def seed(deps: Deps, apicbase: fakes.FakeApicbase, connection_id: str, *, expires_in: int) -> TokenPair:
    """Given: an active connection whose access token expires in ``expires_in`` seconds, holding
    a pair the fake Apicbase issued (so its refresh token is live there)."""
    access, refresh = apicbase.issue_pair()
    pair = TokenPair(access, refresh)
    deps.connections.save_grant(
        Grant(
            connection_id=connection_id,
            application="default",
            client_id=fakes.CLIENT_ID,
            tokens=deps.cipher.encrypt(connection_id, pair),
            expires_at=int(deps.now()) + expires_in,
            scope="accounts library",
            username=apicbase.username,
            source="import",
        )
    )
    return pair


def real_clock() -> Clock:
    """A handler's container runs on the real clock (its DEPS is built with time.time): tests
    that call handlers seed their connections on it too."""
    return Clock(time.time())


def stored_pair(deps: Deps, connection_id: str) -> TokenPair:
    return deps.cipher.decrypt(connection_id, deps.connections.get(connection_id).tokens)


def hold_lease(deps: Deps, connection_id: str) -> Connection:
    """Given: another refresher holds the connection's lease (and never gives it back)."""
    return deps.connections.take_lease(connection_id, "someone-else", deps.settings.lease_seconds)


def refresh_elsewhere(deps: Deps, connection_id: str, refresh_token: str) -> TokenPair:
    """Another refresher's whole refresh: present ``refresh_token`` to Apicbase, store the answer."""
    theirs = deps.apicbase.refresh(deps.credentials.get("default"), refresh_token=refresh_token)
    assert theirs.refresh_token is not None
    pair = TokenPair(theirs.access_token, theirs.refresh_token)
    deps.connections.save_refreshed(
        deps.connections.get(connection_id),
        tokens=deps.cipher.encrypt(connection_id, pair),
        expires_at=theirs.expires_at,
        scope=theirs.scope,
    )
    return pair


class AwsCalls:
    """Every AWS API call made in the process, as (service, operation, params); can also make
    chosen calls fail with a botocore ClientError before they reach moto."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self._failures: list[tuple[str, str, Callable[[dict[str, Any]], bool]]] = []
        self._lock = threading.Lock()
        original = BaseClient._make_api_call
        recorder = self

        def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            with recorder._lock:
                recorder.calls.append((service, operation, copy.copy(params)))
                failure = next((f for f in recorder._failures if f[0] == operation and f[2](params)), None)
                if failure:
                    recorder._failures.remove(failure)
            if failure:
                error = {"Error": {"Code": failure[1], "Message": "injected by the test"}}
                raise ClientError(error, operation)  # type: ignore[arg-type]
            return original(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", recording)

    def fail(self, operation: str, code: str, *, times: int, when: Callable[[dict[str, Any]], bool]) -> None:
        self._failures.extend([(operation, code, when)] * times)

    def reset(self) -> None:
        self.calls.clear()

    def count(self, service: str, *operations: str) -> int:
        return sum(1 for s, op, _ in self.calls if s == service and (not operations or op in operations))

    def per_service(self) -> dict[str, dict[str, int]]:
        summary: dict[str, dict[str, int]] = {}
        for service, operation, _ in self.calls:
            summary.setdefault(service, {}).setdefault(operation, 0)
            summary[service][operation] += 1
        return summary


DYNAMODB_READS = ("GetItem", "Query", "Scan", "BatchGetItem")
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


def serialize_moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks a ConditionExpression and then applies the update as two Python steps, with
    nothing in between holding other threads off (moto/dynamodb/models: update_item), so under
    threads two conditional writes can both pass. DynamoDB itself applies each item operation
    atomically; one lock around moto's item operations models exactly that."""
    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "get_item", "query"):
        original = getattr(DynamoHandler, name)

        def locked(self: DynamoHandler, _original: Callable[..., Any] = original) -> Any:
            with lock:
                return _original(self)

        monkeypatch.setattr(DynamoHandler, name, locked)


class EventSink:
    """The real EventBridge path on moto: a rule on the default bus for the stack's source,
    delivering to an SQS queue that the test reads, as an integrator's rule would. With ``feed``
    (stream_support.Feed), the table's stream is delivered to the events function first."""

    def __init__(self, session: Any, source: str, *, feed: Any = None) -> None:
        self.feed = feed
        self.seen: list[dict[str, Any]] = []
        self.sqs = session.client("sqs")
        self.url = self.sqs.create_queue(QueueName="event-sink")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = session.client("events")
        events.put_rule(Name="event-sink", EventPattern=json.dumps({"source": [source]}))
        events.put_targets(Rule="event-sink", Targets=[{"Id": "sink", "Arn": arn}])

    def received(self) -> list[dict[str, Any]]:
        """Every copy received so far, duplicates included."""
        if self.feed is not None:
            self.feed.drain()
        self.seen += [json.loads(body) for body in drain(self.sqs, self.url)]
        return self.seen

    def of_type(self, detail_type: str) -> list[dict[str, Any]]:
        return [e for e in self.received() if e["detail-type"] == detail_type]

    def deduplicated(self) -> list[dict[str, Any]]:
        """One event per ``detail.event_id``, as an integrator keeps them, in the order first seen."""
        return list({e["detail"]["event_id"]: e for e in reversed(self.received())}.values())[::-1]


def drain(sqs: Any, url: str) -> Iterator[str]:
    """Every message body on a queue, deleting as it goes."""
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            yield message["Body"]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )


class Logs:
    """The broker's Powertools JSON log lines (as the functions print them on stdout), over
    ``logcapture.captured_logs``."""

    def __init__(self, text: Callable[[], str]) -> None:
        self._text = text

    @property
    def text(self) -> str:
        return self._text()

    @property
    def records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.text.splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return [r for r in records if isinstance(r, dict)]

    def at(self, level: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("level") == level]
