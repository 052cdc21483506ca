"""Function pools (local/pool.py): worker processes that run one event at a time, keep their
module state, and are replaced when they die or time out; sizes read from the template."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from local import template as tpl
from local.adapter import Adapter
from local.pool import DEFAULT_POOL_SIZE, FunctionError, Pool, Worker, WorkerStartError, pool_size

from tests.e2e.localrun import at_once

pytestmark = pytest.mark.e2e

HANDLER = """
import os
import time

CALLS = []  # module state: a warm worker remembers the events it ran
if os.environ.get("FAIL_AT_IMPORT"):
    raise RuntimeError("not this text")


def handler(event, context):
    CALLS.append(event)
    if event.get("exit"):
        os._exit(3)
    if event.get("raise"):
        raise ValueError("request data that must not be logged")
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "calls": len(CALLS), "remaining_ms": context.get_remaining_time_in_millis()}
"""


def write_template(tmp_path: Path, timeout: int = 3) -> Path:
    (tmp_path / "fn").mkdir(exist_ok=True)
    (tmp_path / "fn" / "app.py").write_text(HANDLER)
    template = {
        "Resources": {
            "TestFunction": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"CodeUri": str(tmp_path / "fn"), "Handler": "app.handler", "Timeout": timeout},
            }
        }
    }
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(template))
    return path


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[Any]:
    pools: list[Pool] = []

    def make(size: int = 2, timeout: int = 3, **env: str) -> Pool:
        path = write_template(tmp_path, timeout)
        pool = Pool("TestFunction", path, {"PYTHONUNBUFFERED": "1", **env}, size=size, timeout=timeout)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
        pool.join(time.monotonic() + 5)


def invoke_together(pool: Pool, events: list[dict[str, Any]]) -> list[Any]:
    return at_once([lambda event=event: pool.invoke(event) for event in events], FunctionError)


def test_workers_run_one_event_at_a_time_and_stay_warm(make_pool: Any) -> None:
    # Given a pool of two workers
    pool = make_pool(size=2)

    # When six events that take a while arrive at once
    results = invoke_together(pool, [{"sleep": 0.3}] * 6)

    # Then two processes served them all, each remembering the events it ran before
    pids = {r["pid"] for r in results}
    assert len(pids) == 2
    assert pool.processes == 2
    for pid in pids:
        assert sorted(r["calls"] for r in results if r["pid"] == pid) == list(range(1, 4))
    # And the handler was given the function's time left, as Lambda's context does
    assert all(0 < r["remaining_ms"] <= 3000 for r in results)


@pytest.mark.parametrize(
    ("event", "status", "detail", "same_worker"),
    [
        ({"exit": True}, 502, "worker process died (exit code 3)", False),
        ({"raise": True}, 500, "raised ValueError", True),
    ],
    ids=["process-dies", "handler-raises"],
)
def test_a_failed_event_is_api_gateways_error_and_only_a_dead_worker_is_replaced(
    make_pool: Any, event: dict[str, Any], status: int, detail: str, same_worker: bool
) -> None:
    # Given a warm worker
    pool = make_pool(size=1)
    first = pool.invoke({})

    # When its process dies during an event, or its handler raises
    with pytest.raises(FunctionError) as failed:
        pool.invoke(event)

    # Then the event fails with 502 or 500, naming no request data; a worker that died is
    # replaced by a cold one (no memory of earlier events), one whose handler raised goes on
    assert (failed.value.status, failed.value.detail) == (status, detail)
    after = pool.invoke({})
    assert (after["pid"] == first["pid"], after["calls"]) == ((True, 3) if same_worker else (False, 1))


def test_a_worker_that_died_while_idle_is_not_used_again(make_pool: Any) -> None:
    # Given a warm worker that is then killed while it waits for events (out of memory, say)
    pool = make_pool(size=1)
    first = pool.invoke({})
    os.kill(first["pid"], signal.SIGKILL)
    stat = Path(f"/proc/{first['pid']}/stat")
    deadline = time.monotonic() + 10
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is a zombie: dead, not yet reaped

    # When the next event comes
    after = pool.invoke({})

    # Then a new worker serves it, without an error
    assert after["pid"] != first["pid"]
    assert pool.processes == 1


def test_a_spare_worker_started_early_is_the_first_one(make_pool: Any, tmp_path: Path) -> None:
    # Given a pool of one whose worker was started before its environment was known
    template = write_template(tmp_path)
    spare = Worker(template, "TestFunction")
    pool = Pool("TestFunction", template, {"FAIL_AT_IMPORT": ""}, size=1, timeout=3, spare=spare)

    # When events come
    try:
        results = invoke_together(pool, [{}, {}])
    finally:
        pool.close()
        pool.join(time.monotonic() + 5)

    # Then the spare ran them both, one after the other
    assert [r["pid"] for r in results] == [spare.process.pid] * 2
    assert sorted(r["calls"] for r in results) == [1, 2]


def test_a_worker_past_its_timeout_is_stopped(make_pool: Any) -> None:
    # Given a function with a one-second timeout
    pool = make_pool(size=1, timeout=1)
    first = pool.invoke({})

    # When an event takes longer
    started = time.monotonic()
    with pytest.raises(FunctionError) as timed_out:
        pool.invoke({"sleep": 10})

    # Then it fails at the timeout, and the next event runs in a new process
    assert time.monotonic() - started < 5
    assert "timed out" in timed_out.value.detail
    assert pool.invoke({})["pid"] != first["pid"]


def test_a_handler_that_cannot_import_says_so_without_its_text(make_pool: Any) -> None:
    # Given a handler that raises at import
    pool = make_pool(FAIL_AT_IMPORT="1")

    # When the pool warms up, or an event needs a cold start
    # Then the first is a start-up error naming the type, the second a 502
    with pytest.raises(WorkerStartError, match="RuntimeError") as failed:
        pool.warm()
    assert "not this text" not in str(failed.value)
    with pytest.raises(FunctionError) as cold:
        pool.invoke({})
    assert cold.value.status == 502
    assert pool.processes == 0


def test_closing_a_pool_ends_every_worker(make_pool: Any) -> None:
    # Given a pool with two workers, one busy
    pool = make_pool(size=2)
    invoke_together(pool, [{}, {}])
    busy = threading.Thread(target=lambda: invoke_together(pool, [{"sleep": 0.5}]))
    busy.start()
    time.sleep(0.1)
    workers = list(pool._workers)

    # When it is closed and joined
    pool.close()
    pool.join(time.monotonic() + 5)
    busy.join()

    # Then no process is left, and new events are refused
    assert all(worker.process.poll() is not None for worker in workers)
    with pytest.raises(FunctionError) as refused:
        pool.invoke({})
    assert refused.value.status == 503


def function_with(**properties: Any) -> tpl.Function:
    return tpl.Function("F", "fn", "app.handler", {}, properties.pop("events", {}), properties)


def sqs(maximum: Any) -> dict[str, Any]:
    return {"Queue": {"Type": "SQS", "Properties": {"ScalingConfig": {"MaximumConcurrency": maximum}}}}


@pytest.mark.parametrize(
    ("properties", "overrides", "expected"),
    [
        ({"ReservedConcurrentExecutions": 20}, {}, 20),
        ({"ReservedConcurrentExecutions": {"Ref": "Workers"}}, {}, 3),
        ({"events": sqs({"Ref": "Workers"})}, {}, 3),
        ({"ReservedConcurrentExecutions": {"Fn::If": ["Off", 5, {"Ref": "AWS::NoValue"}]}}, {}, DEFAULT_POOL_SIZE),
        ({"ReservedConcurrentExecutions": {"Ref": "Missing"}, "events": sqs(2)}, {}, 2),
        ({}, {}, DEFAULT_POOL_SIZE),
        ({"ReservedConcurrentExecutions": 20}, {"*": 2}, 2),
        ({"ReservedConcurrentExecutions": 20}, {"*": 2, "F": 7}, 7),
    ],
    ids=["reserved", "reserved-ref", "sqs-maximum", "conditional", "unresolvable-then-sqs", "default", "all", "one"],
)
def test_pool_sizes_come_from_the_template_unless_overridden(
    properties: dict[str, Any], overrides: dict[str, int], expected: int
) -> None:
    # Given a function's concurrency settings, the parameters and the environment's overrides
    refs = {"Workers": "3", "Condition:Off": "false"}

    # When its pool size is read
    # Then it is the override, the reservation, the SQS maximum or the default, in that order
    assert pool_size({}, function_with(**properties), refs, overrides) == expected


def test_the_adapter_answers_502_for_a_worker_that_died() -> None:
    # Given the API Gateway stand-in in front of a function whose worker dies
    def invoke(function: str, event: dict[str, Any]) -> Any:
        raise FunctionError(502, "worker process died (exit code -9)")

    logged: list[str] = []
    route = tpl.Route("GET", "/x", "F", "NONE", "x")
    server = Adapter("127.0.0.1", 0, [route], invoke, logged.append, log_requests=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        # When it is called
        response = requests.get(f"{server.url}/x", timeout=10)
    finally:
        server.shutdown()
        server.server_close()

    # Then API Gateway's 502, and the log says why
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    assert logged == ["F worker process died (exit code -9)"]


def test_the_worker_protocol_survives_a_handler_that_prints(tmp_path: Path, make_pool: Any) -> None:
    # Given a handler that prints to stdout, as a careless one might
    pool = make_pool(size=1)
    app = tmp_path / "fn" / "app.py"
    app.write_text(app.read_text() + textwrap.dedent(
        """
        _handler = handler
        def handler(event, context):
            print('{"result": "not the answer"}')
            return _handler(event, context)
        """
    ))  # fmt: skip

    # When it runs
    # Then the answer is the handler's return value, not what it printed
    assert pool.invoke({})["calls"] == 1
