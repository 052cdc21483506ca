"""SQS records that are not ours, mixed with good ones, through the real refresh worker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apicbase_oauth.adapters.queue import encode
from tests.hostile.conftest import FIGURES, seed_connection, table_items
from tests.hostile.strategies import examples, hostile_text, huge

FRESH = ["lib-a", "lib-b"]
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:apicbase-oauth-broker-RefreshQueue"

good_bodies = st.builds(encode, st.sampled_from([*FRESH, "lib-gone"]), st.integers(0, 2**40))
not_ours = st.one_of(
    hostile_text,
    huge,
    st.builds(json.dumps, st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=12), max_size=4)),
    st.builds(
        lambda cid, queued_at: json.dumps({"connection_id": cid, "queued_at": queued_at}),
        st.sampled_from(FRESH),
        st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=8), st.none()),
    ),
    st.builds(
        lambda cid: json.dumps({"connection_id": cid, "queued_at": 1}),
        st.one_of(st.integers(), st.none(), st.lists(st.text()), st.sampled_from(["", "a/b", "x" * 129, "é"])),
    ),
    st.builds(lambda cid: encode(cid, 1)[:-1] + ',"extra":1}', st.sampled_from(FRESH)),
)


def _record(index: int, body: str) -> dict:
    return {
        "messageId": f"m{index}",
        "receiptHandle": f"r{index}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1800000000000"},
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }


@pytest.fixture
def worker(handlers, apicbase):
    module = handlers.module("RefreshWorkerFunction")
    for connection_id in FRESH:
        seed_connection(module.DEPS, apicbase, connection_id, expires_in=604800)
    return module


@examples(25)
@given(data=st.data(), shape=st.lists(st.booleans(), min_size=1, max_size=10))
def test_exactly_the_records_that_are_not_ours_fail(handlers, worker, apicbase, watch, data, shape):
    """Given a batch mixing our refresh messages with records that are not ours (random, wrong
    fields, wrong types, huge),
    when the worker handles it,
    then exactly the foreign records are reported as failures, the rest succeed, and no
    connection changes."""
    table = worker.DEPS.connections.table
    before = table_items(table)
    bodies = [data.draw(good_bodies if good else not_ours) for good in shape]
    FIGURES["worker: SQS records tried"] += len(bodies)
    event = {"Records": [_record(i, body) for i, body in enumerate(bodies)]}

    result = handlers.invoke(worker, event)

    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    assert failed == {f"m{i}" for i, good in enumerate(shape) if not good}
    assert apicbase.token_requests == 0
    assert table_items(table) == before
