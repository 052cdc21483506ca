"""Figure 3: what the recurring work costs in AWS calls, the figures that become the bill.

- A refresh: the scheduler queues N due connections, one worker container (one module instance,
  as one Lambda container) takes them from the queue ten at a time, as Lambda's poller does, and
  deletes what it did not report as failed. Every call of the scheduler and the worker is counted;
  a Scan then checks that each connection was refreshed exactly once.
- A warm GET /connections/{id}/token: the admin function, warm, asked for a token that is valid
  for a week (no refresh): the calls each answer makes, its CPU and wall time.
- The scheduler's Query on a table of many connections of which few are due. The sparse
  ``refresh-due`` index is keyed by expiry, so the Query should read the due items and nothing
  else; the responses' ScannedCount and ConsumedCapacity tell. moto runs in this process, and the
  items go straight into its backend (what batch_write_item does per item, without HTTP).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends

from . import harness as h
from .harness import CallCounter, Stack, Warm

TIMEOUT = 300.0  # a safety net for the refresh run


@dataclass
class RefreshCosts:
    n: int
    calls: Counter[tuple[str, str]]  # the scheduler's and the worker's, whole run
    refreshed: int  # refreshed exactly once
    failed: int
    token_requests: int
    invalid_grants: int
    cpu: float  # the worker's CPU seconds in its handler, whole run


def _refreshed_once(stack: Stack, tag: str) -> int:
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(connection_id, :tag)",
        "ExpressionAttributeValues": {":tag": tag + "-"},
    }
    items: list[dict[str, Any]] = []
    while True:
        page = stack.table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sum(item.get("refresh_count") == 1 for item in items)


def refreshes(stack: Stack, counter: CallCounter, n: int) -> RefreshCosts:
    tag = f"r{uuid.uuid4().hex[:6]}"
    stack.seed_connections([f"{tag}-{i:05d}" for i in range(n)], expires_in=3600)  # within the window: due
    sqs, queue_url = stack.session.client("sqs"), stack.refs["RefreshQueue"]
    done, failed, cpu = 0, 0, 0.0
    with h.quiet_stdout():
        scheduler = h.load_handler(stack, "RefreshSchedulerFunction")
        worker = h.load_handler(stack, "RefreshWorkerFunction")
        context = h.lambda_context("RefreshWorkerFunction")
        counter.reset()
        before = stack.stub.stats()
        with counter.scope("refresh"):
            queued = scheduler.lambda_handler(h.schedule_event(), h.lambda_context("RefreshSchedulerFunction"))
        if queued["due"] != n:
            raise RuntimeError(f"the scheduler found {queued['due']} due connections, expected {n}")
        started = time.monotonic()
        while done + failed < queued["queued"] and time.monotonic() - started < TIMEOUT:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = messages.get("Messages", [])
            if not messages:
                continue
            event = h.sqs_event(messages, stack)
            with counter.scope("refresh"):
                clock = time.thread_time()
                answer = worker.lambda_handler(event, context)
                cpu += time.thread_time() - clock
            failures = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)
                if m["MessageId"] not in failures
            ]
            if entries:  # Lambda's poller's work, not the function's: not counted
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            done, failed = done + len(entries), failed + len(failures)
        after = stack.stub.stats()
    return RefreshCosts(
        n=n,
        calls=counter.of("refresh"),
        refreshed=_refreshed_once(stack, tag),
        failed=failed,
        token_requests=after["token_requests"] - before["token_requests"],
        invalid_grants=after["invalid_grant"] - before["invalid_grant"],
        cpu=cpu,
    )


def token_gets(stack: Stack, counter: CallCounter, count: int) -> Warm:
    stack.seed_connections(["warm-token"], expires_in=h.ONE_WEEK)
    event = h.http_event(stack.template, "GET", "/connections/warm-token/token")
    return h.warm_invocations(stack, counter, "ConnectionsFunction", lambda: event, count)


# What the table and its indexes read: the Query sees the index's keys and connection_id.
LEAN_ATTRIBUTES = ("pk", "entity", "connection_id", "status", "expires_at", "refresh_queue", "application")


@dataclass
class QueryFigures:
    total: int
    due: int
    queued: int
    scanned: int
    pages: int
    capacity_units: float
    seed_seconds: float
    query_seconds: float


def scheduler_query(stub: h.Stub, counter: CallCounter, *, total: int, due: int) -> QueryFigures:
    serialize, now, step = TypeSerializer().serialize, int(time.time()), total // due
    with mock_aws():
        stack = Stack.provision(None, stub, "bench-query")
        backend = dynamodb_backends[h.local_aws.ACCOUNT][h.REGION]
        started = time.perf_counter()
        for i in range(total):  # the due ones spread through the key space; the rest expire in a week
            is_due = i % step == 0 and i // step < due
            item = h.connection_item(f"q-{i:06d}", now=now, expires_at=now + (3600 if is_due else h.ONE_WEEK))
            backend.put_item(stack.refs["ConnectionsTable"], {k: serialize(item[k]) for k in LEAN_ATTRIBUTES})
        seeded = time.perf_counter()
        with h.quiet_stdout():
            scheduler = h.load_handler(stack, "RefreshSchedulerFunction")
            counter.reset()
            with counter.scope("scheduler"):
                answer = scheduler.lambda_handler(h.schedule_event(), h.lambda_context("RefreshSchedulerFunction"))
    pages = [parsed for scope, parsed in counter.queries if scope == "scheduler"]
    return QueryFigures(
        total=total,
        due=due,
        queued=answer["queued"],
        scanned=sum(p.get("ScannedCount", 0) for p in pages),
        pages=len(pages),
        capacity_units=sum(p.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0) for p in pages),
        seed_seconds=seeded - started,
        query_seconds=time.perf_counter() - seeded,
    )
