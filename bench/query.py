"""Figure 3, the scheduler's Query on a table of many connections of which few are due. The sparse
``refresh-due`` index is keyed by expiry, so the Query should read the due items and nothing else;
the Query responses' ScannedCount and ConsumedCapacity tell. moto runs in this process, and the
items go straight into its backend (what batch_write_item does per item, without HTTP)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends

from . import harness as h
from .harness import CallCounter, Stack

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


def run(stub: h.Stub, counter: CallCounter, *, total: int, due: int) -> QueryFigures:
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
