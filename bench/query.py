"""Figure 4, second half: the scheduler's Query on a table of many connections of which few are
due. The sparse ``refresh-due`` index is keyed by expiry, so the Query should read the due
items and nothing else; the Query responses' ScannedCount and ConsumedCapacity tell.

moto runs in this process here (no HTTP per write). Seeding goes through batch_write_item for
the first items, which measures that path's rate, and then straight into moto's backend (the
call batch_write_item makes for each item, without botocore serialising and moto parsing the
request), which keeps 100,000 items within a minute on a quiet machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends

from . import harness as h
from .harness import CallCounter, Stack

API_SEEDED = 2_000  # items written through batch_write_item, to measure that path's rate
LEAN_ATTRIBUTES = ("pk", "entity", "connection_id", "status", "expires_at", "refresh_queue", "application")


@dataclass
class QueryFigures:
    total: int
    due: int
    queued: int
    scanned: int
    returned: int
    pages: int
    capacity_units: float
    seed_api_rate: float  # items per second through batch_write_item
    seed_backend_rate: float  # items per second straight into moto's backend
    seed_seconds: float
    query_seconds: float


def _items(total: int, due: int) -> list[dict[str, Any]]:
    now = int(time.time())
    serialize = TypeSerializer().serialize
    items = []
    for i in range(total):
        # Spread the due ones through the key space; the rest expire in a week (window: 48 h).
        is_due = i % (total // due) == 0 and i // (total // due) < due
        item = h.connection_item(f"q-{i:06d}", now=now, expires_at=now + (3600 if is_due else h.ONE_WEEK))
        # Only what the table and its indexes read: the scheduler's Query sees the index's keys
        # and connection_id, and nothing here is decrypted. Lean items halve the seeding time.
        lean = {k: item[k] for k in LEAN_ATTRIBUTES}
        items.append({k: serialize(v) for k, v in lean.items()})
    return items


def run(stub: h.Stub, counter: CallCounter, *, total: int, due: int) -> QueryFigures:
    with mock_aws():
        stack = Stack.provision(None, stub, "bench-query")
        table_name = stack.refs["ConnectionsTable"]
        items = _items(total, due)
        client = stack.session.client("dynamodb")
        start = time.perf_counter()
        for i in range(0, API_SEEDED, 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[i : i + 25]]
            client.batch_write_item(RequestItems={table_name: batch})
        api_done = time.perf_counter()
        backend = dynamodb_backends[h.local_aws.ACCOUNT][h.REGION]
        for item in items[API_SEEDED:]:
            backend.put_item(table_name, item)
        seeded = time.perf_counter()
        with h.quiet_stdout():
            scheduler = h.load_handler(stack, "RefreshSchedulerFunction")
            counter.reset()
            with counter.scope("scheduler"):
                start_query = time.perf_counter()
                answer = scheduler.lambda_handler(h.schedule_event(), h.lambda_context("RefreshSchedulerFunction"))
                query_seconds = time.perf_counter() - start_query
    pages = [parsed for scope, parsed in counter.queries if scope == "scheduler"]
    return QueryFigures(
        total=total,
        due=due,
        queued=answer["queued"],
        scanned=sum(p.get("ScannedCount", 0) for p in pages),
        returned=sum(p.get("Count", 0) for p in pages),
        pages=len(pages),
        capacity_units=sum(p.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0) for p in pages),
        seed_api_rate=API_SEEDED / (api_done - start),
        seed_backend_rate=(total - API_SEEDED) / (seeded - api_done),
        seed_seconds=seeded - start,
        query_seconds=query_seconds,
    )
