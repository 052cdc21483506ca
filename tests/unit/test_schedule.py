"""The refresh scheduler (functions/refresh_scheduler) as EventBridge Scheduler invokes it: one
Query on the sparse refresh-due index, never a Scan, and the due connections sent in tens."""

from __future__ import annotations

import math
from typing import Any

import pytest

from apicbase_oauth.adapters.dynamodb import REFRESH_INDEX, connection_key
from apicbase_oauth.adapters.queue import BATCH_SIZE, decode
from apicbase_oauth.model import NEEDS_REAUTHORIZATION, Grant
from tests.conftest import load_event
from tests.unit.refresh_support import AwsCalls, drain, real_clock

CONNECTIONS = 300


clock = pytest.fixture(real_clock, name="clock")


@pytest.fixture
def scheduler(load_handler) -> Any:
    return load_handler("RefreshSchedulerFunction")


@pytest.fixture
def table(deps, aws, clock) -> set[str]:
    """Given 300 connections expiring from 5 hours ago to 3 days ahead, some needing
    reauthorization, some backing off until later, some whose backoff has passed.
    Returns the ids the scheduler must queue."""
    now = int(clock())
    window = deps.settings.schedule_margin_seconds
    # One connection written by the store gives the item's exact shape; the rest are its copies,
    # written in batches (300 single writes make this fixture slow on moto).
    deps.connections.save_grant(
        Grant(
            connection_id="lib-000",
            application="default",
            client_id="client-default",
            tokens=b"ciphertext the scheduler never reads",
            expires_at=now,
            scope="accounts library",
            username=None,
            source="import",
        )
    )
    shape = aws.table.get_item(Key={"pk": connection_key("lib-000")})["Item"]
    expected = set()
    with aws.table.batch_writer() as batch:
        for i in range(CONNECTIONS):
            cid = f"lib-{i:03d}"
            expires_at = now - 5 * 3600 + i * 1000  # steps of 1000 s: none within seconds of the window's edge
            item = {**shape, "pk": connection_key(cid), "connection_id": cid, "expires_at": expires_at}
            backing_off = i % 11 == 0
            if i % 7 == 0:  # as mark_needs_reauthorization leaves it: out of the sparse index
                item["status"] = NEEDS_REAUTHORIZATION
                del item["refresh_queue"]
            elif backing_off or i % 13 == 0:
                item["next_attempt_at"] = now + 3600 if backing_off else now - 60
            batch.put_item(Item=item)
            if expires_at <= now + window and i % 7 != 0 and not backing_off:
                expected.add(cid)
    return expected


def queued_ids(aws) -> list[str]:
    return [decode(body).connection_id for body in drain(aws.session.client("sqs"), aws.refs["RefreshQueue"])]


def test_the_tick_queues_exactly_the_due_connections(table, aws, scheduler, lambda_context):
    # When the schedule ticks
    result = scheduler.lambda_handler(load_event("scheduled_tick.json"), lambda_context)
    # Then every due, active connection that is not backing off is queued once, and no other
    queued = queued_ids(aws)
    assert sorted(queued) == sorted(table)
    assert result == {"due": len(table), "queued": len(table), "failed": 0, "parked": 0}
    assert 0 < len(table) < CONNECTIONS


def test_the_tick_sends_batches_of_ten(table, aws, scheduler, lambda_context, monkeypatch):
    # Given every AWS call is watched
    calls = AwsCalls(monkeypatch)
    # When the schedule ticks
    scheduler.lambda_handler(load_event("scheduled_tick.json"), lambda_context)
    # Then the messages went out in full batches of ten (the last one the remainder)
    batches = [params["Entries"] for _, op, params in calls.calls if op == "SendMessageBatch"]
    assert len(batches) == math.ceil(len(table) / BATCH_SIZE)
    assert [len(entries) for entries in batches[:-1]] == [BATCH_SIZE] * (len(batches) - 1)
    assert sum(map(len, batches)) == len(table)


def test_the_tick_queries_the_refresh_index_and_never_scans(table, aws, scheduler, lambda_context, monkeypatch):
    # Given every AWS call is watched
    calls = AwsCalls(monkeypatch)
    # When the schedule ticks
    scheduler.lambda_handler(load_event("scheduled_tick.json"), lambda_context)
    # Then DynamoDB was only queried, on the sparse refresh-due index, by expiry
    dynamodb = [(op, params) for service, op, params in calls.calls if service == "dynamodb"]
    assert dynamodb and {op for op, _ in dynamodb} == {"Query"}
    assert all(params["IndexName"] == REFRESH_INDEX for _, params in dynamodb)
    assert all("expires_at <= :due" in params["KeyConditionExpression"] for _, params in dynamodb)
