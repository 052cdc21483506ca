"""The broker's JSON log lines and EMF metric lines: the keys Powertools wrote, which the runbook's
queries and the alarms read."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from local.lambda_context import LambdaContext

from apicbase_oauth.observability import API_GATEWAY_HTTP, logger, metrics


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    monkeypatch.setattr(metrics, "namespace", "ApicbaseOAuthBrokerTest")  # a container reads it at start
    return stream


def handled(event: dict[str, Any], context: LambdaContext, *, fail: bool = False) -> None:
    @logger.inject_lambda_context(correlation_id_path=API_GATEWAY_HTTP, clear_state=True)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> None:
        logger.append_keys(caller="arn:aws:iam::123456789012:role/backend")
        logger.info("refreshed", connection_id="lib-42", username=None)
        metrics.add_metric(name="Refreshed", unit="Count", value=1)
        metrics.add_metric(name="Refreshed", unit="Count", value=1)
        if fail:
            raise RuntimeError("the handler failed")

    handler(event, context)


def test_a_log_line_names_the_invocation_and_the_callers_keys(lines: io.StringIO, lambda_context) -> None:
    """Given a handler that logs with keyword keys, then its line is one JSON object with the
    level, the caller's location, the function, the request, API Gateway's request id, the
    appended keys and its own keys, None values left out."""
    handled({"requestContext": {"requestId": "api-request-1"}}, lambda_context)

    line = json.loads(lines.getvalue().splitlines()[0])
    assert {k: line[k] for k in ("level", "message", "service", "correlation_id", "caller", "connection_id")} == {
        "level": "INFO",
        "message": "refreshed",
        "service": "apicbase-oauth-broker",
        "correlation_id": "api-request-1",
        "caller": "arn:aws:iam::123456789012:role/backend",
        "connection_id": "lib-42",
    }
    source = Path(__file__).read_text().splitlines()
    logged_at = next(n for n, text in enumerate(source, 1) if text.strip().startswith('logger.info("refreshed"'))
    assert line["location"] == f"handler:{logged_at}"  # the line that logged, not the logger's own
    assert line["function_request_id"] == lambda_context.aws_request_id
    assert "username" not in line and "timestamp" in line and isinstance(line["cold_start"], bool)


def test_the_counts_of_an_invocation_are_one_emf_line_even_when_it_fails(
    capsys: pytest.CaptureFixture[str], lines: io.StringIO, lambda_context
) -> None:
    """Given a handler that counts twice and then raises, then one EMF line carries both counts
    under the template's namespace, with the service as the one dimension."""
    with pytest.raises(RuntimeError):
        handled({}, lambda_context, fail=True)

    emf = next(json.loads(out) for out in capsys.readouterr().out.splitlines() if out.startswith('{"_aws"'))
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == metrics.namespace
    assert directive["Dimensions"] == [["service"]] and emf["service"] == "apicbase-oauth-broker"
    assert directive["Metrics"] == [{"Name": "Refreshed", "Unit": "Count"}]
    assert emf["Refreshed"] == [1.0, 1.0]
    assert metrics.metric_set == {}
