"""The refresh worker (functions/refresh_worker) as SQS invokes it: partial batch failures,
duplicates, out-of-order messages, poison, permanent failures and backoff."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from apicbase_oauth.adapters.queue import encode
from apicbase_oauth.observability import metrics
from tests.conftest import load_event
from tests.unit.logcapture import captured_logs
from tests.unit.refresh_support import real_clock, seed, stored_pair

DUE = 3600


clock = pytest.fixture(real_clock, name="clock")


@pytest.fixture
def worker(load_handler) -> Any:
    return load_handler("RefreshWorkerFunction")


@pytest.fixture(autouse=True)
def no_metrics_left_over() -> Iterator[None]:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def sqs_event(*messages: tuple[str, str]) -> dict[str, Any]:
    """An SQS event shaped like events/sqs_refresh_batch.json, one record per (message id, body)."""
    record = load_event("sqs_refresh_batch.json")["Records"][0]
    return {"Records": [{**copy.deepcopy(record), "messageId": mid, "body": body} for mid, body in messages]}


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def emf_metric_names(stdout: str) -> set[str]:
    """Metric names in the Embedded Metric Format lines @metrics.log_metrics prints."""
    names: set[str] = set()
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_the_sample_event_refreshes_its_connection(deps, apicbase, worker, lambda_context):
    # Given the connection named in events/sqs_refresh_batch.json is due
    seed(deps, apicbase, "lib-42", expires_in=DUE)
    # When the worker handles the sample event
    response = worker.lambda_handler(load_event("sqs_refresh_batch.json"), lambda_context)
    # Then no record failed and the rotated refresh token is stored
    assert failed_ids(response) == []
    assert stored_pair(deps, "lib-42").refresh_token == apicbase.issued_refresh_tokens[-1]


def test_the_worker_logs_no_token(deps, apicbase, worker, lambda_context, caplog):
    # Given a due connection
    seeded = seed(deps, apicbase, "lib-42", expires_in=DUE)
    # When the worker refreshes it, logging at its most talkative
    with captured_logs(caplog) as logged:
        worker.lambda_handler(load_event("sqs_refresh_batch.json"), lambda_context)
    # Then no token, old or new, appears in what it logged
    issued = stored_pair(deps, "lib-42")
    text = logged()
    assert "lib-42" in text
    tokens = (seeded.access_token, seeded.refresh_token, issued.access_token, issued.refresh_token)
    assert [token for token in tokens if token in text] == []


def test_duplicate_and_out_of_order_messages_refresh_once(deps, apicbase, clock, worker, lambda_context):
    # Given a due connection, queued by two ticks: a duplicate in one batch, the older message later
    seed(deps, apicbase, "lib-1", expires_in=DUE)
    newer, older = encode("lib-1", int(clock())), encode("lib-1", int(clock()) - 3600)
    # When the worker handles both batches
    first = worker.lambda_handler(sqs_event(("m-1", newer), ("m-2", newer)), lambda_context)
    second = worker.lambda_handler(sqs_event(("m-3", older)), lambda_context)
    # Then every record succeeded and Apicbase was asked once
    assert failed_ids(first) == failed_ids(second) == []
    assert apicbase.refresh_requests == 1
    assert stored_pair(deps, "lib-1").refresh_token == apicbase.issued_refresh_tokens[-1]


def test_only_the_failed_records_of_a_batch_are_reported(deps, apicbase, clock, worker, lambda_context):
    # Given three due connections, Apicbase failing the first refresh with a 503, and a poison message
    for cid in ("lib-1", "lib-2", "lib-3"):
        seed(deps, apicbase, cid, expires_in=DUE)
    apicbase.scripted.append((503, "Service Unavailable", {}))
    now = int(clock())
    event = sqs_event(
        ("m-1", encode("lib-1", now)),
        ("m-2", encode("lib-2", now)),
        ("m-poison", json.dumps({"Message": "not a refresh message"})),
        ("m-3", encode("lib-3", now)),
    )
    # When the worker handles the batch
    response = worker.lambda_handler(event, lambda_context)
    # Then exactly the 503 and the poison message are reported for SQS to retry, the rest refreshed
    assert failed_ids(response) == ["m-1", "m-poison"]
    assert [deps.connections.get(cid).refresh_count for cid in ("lib-1", "lib-2", "lib-3")] == [0, 1, 1]


def test_a_permanent_failure_is_recorded_and_alarmed_but_not_retried_by_sqs(
    deps, apicbase, clock, worker, lambda_context, capsys
):
    # Given Apicbase rejects the client secret (nothing an SQS redelivery could change)
    seed(deps, apicbase, "lib-1", expires_in=DUE)
    apicbase.client_secret = "secret-only-apicbase-knows"
    # When the worker handles the connection's message
    response = worker.lambda_handler(sqs_event(("m-1", encode("lib-1", int(clock())))), lambda_context)
    # Then the message is not failed, the failure is recorded with a backoff, and the metric is emitted
    assert failed_ids(response) == []
    connection = deps.connections.get("lib-1")
    assert (connection.status, connection.last_error) == ("active", "invalid_client")
    assert connection.next_attempt_at is not None and connection.next_attempt_at > clock()
    assert "InvalidClient" in emf_metric_names(capsys.readouterr().out)


def test_a_redelivery_during_the_backoff_leaves_apicbase_alone(deps, apicbase, clock, worker, lambda_context):
    # Given a due connection whose refresh was rate-limited for 15 minutes
    seed(deps, apicbase, "lib-1", expires_in=DUE)
    apicbase.scripted.append((429, {"detail": "Request was throttled."}, {"Retry-After": "900"}))
    event = sqs_event(("m-1", encode("lib-1", int(clock()))))
    assert failed_ids(worker.lambda_handler(event, lambda_context)) == ["m-1"]
    # When SQS delivers the message again before the 15 minutes are over
    response = worker.lambda_handler(event, lambda_context)
    # Then the record succeeds without asking Apicbase; the scheduler queues it when the time comes
    assert failed_ids(response) == []
    assert apicbase.token_requests == 1
    assert deps.connections.get("lib-1").next_attempt_at >= int(clock()) + 900


def test_messages_for_connections_that_need_reauthorization_or_are_gone_are_dropped(
    deps, apicbase, clock, worker, lambda_context
):
    # Given one connection that needs reauthorization and one that was deleted
    seeded = seed(deps, apicbase, "lib-1", expires_in=DUE)
    deps.connections.mark_for_reauthorization(deps.connections.get("lib-1"), reason="refresh_token_rejected")
    now = int(clock())
    # When the worker handles their messages
    response = worker.lambda_handler(
        sqs_event(("m-1", encode("lib-1", now)), ("m-2", encode("lib-9", now))), lambda_context
    )
    # Then nothing fails (no retry can help) and Apicbase is not asked
    assert failed_ids(response) == []
    assert apicbase.token_requests == 0
    assert stored_pair(deps, "lib-1") == seeded
