"""Figures 3 and 4: the scheduler plus C workers refreshing N due connections, against a token
endpoint with a fixed latency, compared with the ideal N x latency / C and with a naive
sequential refresher; and what each refresh costs in AWS calls.

Each worker thread is one Lambda container: its own instance of the handler module (its own
clients), fed batches of ten from the queue, deleting what it did not report as failed, as
Lambda's SQS poller does. The pipeline runs against moto's server, and against the in-memory AWS
of ``fakeaws`` (no emulator: what is left is the broker's own work), with or without a simulated
per-call latency. Every run ends with a check: each connection refreshed exactly once, and the
refresh tokens the fake Apicbase holds live are exactly the ones stored.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from apicbase_oauth import deps as deps_module
from apicbase_oauth.adapters.apicbase import ApicbaseClient, ClientCredentials
from apicbase_oauth.adapters.credentials import CredentialStore
from apicbase_oauth.config import Settings
from apicbase_oauth.refresh import REFRESHED, refresh_connection

from . import harness as h
from .fakeaws import FakeAws
from .harness import CallCounter, Stack

BATCH = 10  # the template's BatchSize
RUN_TIMEOUT = 900.0  # a safety net: a busy 2-core machine took 285 s for N = 2000


@dataclass
class RunFigures:
    n: int
    concurrency: int
    latency_ms: float
    wall: float
    refreshed: int
    failed: int
    calls: Counter[tuple[str, str]]  # worker and scheduler calls, whole run
    token_requests: int
    new_connections: int
    invalid_grants: int
    cpu: float  # our CPU seconds in the handlers (sum over workers)
    aws: float  # seconds inside AWS calls (the handlers' and the poller's deletes): mostly the emulator
    emulator_cpu: float | None = None  # moto's server's CPU seconds during the run
    tokens_match: bool | None = None  # the fake Apicbase's newly live refresh tokens == the stored ones
    aws_latency_ms: float | None = None  # the in-memory AWS's latency per call; None: moto's server

    @property
    def backend(self) -> str:
        if self.aws_latency_ms is None:
            return "moto's server"
        return f"in-memory AWS, {self.aws_latency_ms:g} ms per call"

    @property
    def ideal(self) -> float:
        return self.n * self.latency_ms / 1000 / self.concurrency

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall

    @property
    def wall_without_emulator(self) -> float:
        """The wall time less each worker's share of the time spent waiting in AWS calls: what
        the run would take if the emulator answered at once (an optimistic bound)."""
        return self.wall - self.aws / self.concurrency


def _seed(stack: Stack, n: int, tag: str) -> list[str]:
    ids = [f"{tag}-{i:05d}" for i in range(n)]
    stack.seed_connections(ids, expires_in=3600)  # expiring within the 48 h window: due
    return ids


def _stored(stack: Stack, tag: str) -> tuple[int, set[str]]:
    """How many of this run's connections were refreshed exactly once, and the refresh tokens
    they hold, decrypted (one Scan, not N reads)."""
    kwargs: dict[str, Any] = {
        "FilterExpression": "begins_with(connection_id, :tag)",
        "ProjectionExpression": "connection_id, #tokens, refresh_count",
        "ExpressionAttributeNames": {"#tokens": "tokens"},
        "ExpressionAttributeValues": {":tag": tag + "-"},
    }
    items: list[dict[str, Any]] = []
    while True:
        page = stack.table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    cipher = stack.cipher
    with ThreadPoolExecutor(h.SEED_THREADS) as pool:
        pairs = pool.map(lambda item: cipher.decrypt(item["connection_id"], item["tokens"].value), items)
        tokens = {pair.refresh_token for pair in pairs}
    return sum(item.get("refresh_count") == 1 for item in items), tokens


def _worker(
    module: Any,
    sqs: Any,
    queue_url: str,
    queue_arn: str,
    counter: CallCounter,
    tally: Counter[str],
    lock: threading.Lock,
    done: threading.Event,
) -> None:
    context = h.lambda_context("RefreshWorkerFunction")
    while not done.is_set():
        # Long polling, as Lambda's poller does: an idle worker waits in moto instead of asking again.
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=1)
        messages = messages.get("Messages", [])
        if not messages:
            continue
        with counter.scope("worker"):
            cpu = time.thread_time()
            try:
                answer = module.lambda_handler(h.sqs_event(messages, queue_arn), context)
                failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            except Exception:  # a crashed invocation: Lambda retries the whole batch later
                failed = {m["MessageId"] for m in messages}
            cpu = time.thread_time() - cpu
        succeeded = [m for m in messages if m["MessageId"] not in failed]
        if succeeded:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(succeeded)]
            with counter.scope("poller"):  # Lambda's work, not the function's: timed, not counted as its cost
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        with lock:
            tally["done"] += len(succeeded)
            tally["failed"] += len(failed)
            tally["cpu"] += cpu


def pipeline(
    stack: Stack,
    counter: CallCounter,
    *,
    n: int,
    concurrency: int,
    latency_ms: float,
    emulator: h.Emulator | None = None,
) -> RunFigures:
    """Scheduler and workers at once, from the first Query to the last refresh stored."""
    ids = _seed(stack, n, f"r{uuid.uuid4().hex[:6]}")
    live_before = stack.stub.live_refresh_tokens()
    stack.stub.set_delay(latency_ms)
    queue_url, arn = stack.refs["RefreshQueue"], h.queue_arn(stack)
    tally: Counter[str] = Counter()  # refreshes done and failed, CPU seconds
    lock, done = threading.Lock(), threading.Event()
    with h.quiet_stdout():
        scheduler = h.load_handler(stack, "RefreshSchedulerFunction")
        workers = [h.load_handler(stack, "RefreshWorkerFunction") for _ in range(concurrency)]
        sqs_clients = [stack.session.client("sqs") for _ in range(concurrency)]
        counter.reset()
        before = stack.stub.stats()
        threads = [
            threading.Thread(target=_worker, args=(w, sqs, queue_url, arn, counter, tally, lock, done), daemon=True)
            for w, sqs in zip(workers, sqs_clients, strict=True)
        ]
        emulator_cpu = emulator.cpu_seconds() if emulator else None
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        with counter.scope("scheduler"):
            queued = scheduler.lambda_handler(h.schedule_event(), h.lambda_context("RefreshSchedulerFunction"))
        while tally["done"] + tally["failed"] < queued["queued"] and time.perf_counter() - start < RUN_TIMEOUT:
            time.sleep(0.01)
        wall = time.perf_counter() - start
        if emulator_cpu is not None and emulator is not None:
            emulator_cpu = (emulator.cpu_seconds() or 0.0) - emulator_cpu
        done.set()
        for thread in threads:
            thread.join(timeout=30)
        after = stack.stub.stats()
    if queued["due"] != n:
        raise RuntimeError(f"the scheduler found {queued['due']} due connections, expected {n}")
    calls = counter.of("worker") + counter.of("scheduler")
    live_after = stack.stub.live_refresh_tokens()
    refreshed, stored = _stored(stack, ids[0].split("-")[0])
    # Each seeded token rotated once, into exactly the token now stored: none lost, none extra.
    tokens_match = len(live_before - live_after) == n and live_after - live_before == stored and len(stored) == n
    return RunFigures(
        n=n,
        concurrency=concurrency,
        latency_ms=latency_ms,
        wall=wall,
        refreshed=refreshed,
        failed=tally["failed"],
        calls=calls,
        token_requests=after["token_requests"] - before["token_requests"],
        new_connections=after["connections_opened"] - before["connections_opened"],
        invalid_grants=after["invalid_grant"] - before["invalid_grant"],
        cpu=tally["cpu"],
        aws=counter.seconds["worker"] + counter.seconds["poller"],
        emulator_cpu=emulator_cpu,
        tokens_match=tokens_match,
    )


@contextlib.contextmanager
def in_memory(stack: Stack, *, aws_latency_ms: float) -> Iterator[Stack]:
    """The same stack's names (and secret), every AWS call meanwhile answered by the in-memory AWS."""
    secrets = stack.session.client("secretsmanager")
    secret = secrets.get_secret_value(SecretId=stack.refs["ClientCredentialsSecret"])["SecretString"]
    table = h.tpl.dynamodb_create_table_kwargs(stack.template, "ConnectionsTable", stack.refs["ConnectionsTable"])
    fake = FakeAws(stack.refs, table, secret, h.queue_arn(stack))
    fake.latency = aws_latency_ms / 1000
    try:
        with fake.installed():
            yield replace(stack, endpoint=None, session=h.aws_session(None))
    finally:
        h.aws_session(stack.endpoint)  # the environment pointed at the emulator again


def pipeline_in_memory(
    stack: Stack, counter: CallCounter, *, n: int, concurrency: int, latency_ms: float, aws_latency_ms: float
) -> RunFigures:
    """The pipeline with the emulator's cost removed: the broker's own work, plus the AWS
    latency given (slept, as a network round trip is)."""
    with in_memory(stack, aws_latency_ms=aws_latency_ms) as memory_stack:
        figures = pipeline(memory_stack, counter, n=n, concurrency=concurrency, latency_ms=latency_ms)
    return replace(figures, aws_latency_ms=aws_latency_ms)


class _FreshCredentials(CredentialStore):
    """Reads the secret on every refresh (the naive refresher caches nothing)."""

    def get(self, application: str, *, force_fetch: bool = False) -> ClientCredentials:
        return super().get(application, force_fetch=True)


def naive(stack: Stack, counter: CallCounter, *, n: int, latency_ms: float) -> RunFigures:
    """The same refresh, one at a time, with a new HTTP connection and a fresh secret read each."""
    ids = _seed(stack, n, f"n{uuid.uuid4().hex[:6]}")
    stack.stub.set_delay(latency_ms)
    env = stack.env("RefreshWorkerFunction")
    settings = Settings.from_env(env)
    with h.quiet_stdout():
        deps = deps_module.build(settings, session=h.aws_session(stack.endpoint))
        deps.credentials = _FreshCredentials(settings.client_secret_id, max_age=settings.secret_max_age_seconds)
        counter.reset()
        before = stack.stub.stats()
        start, cpu = time.perf_counter(), time.thread_time()
        refreshed = 0
        with counter.scope("naive"):
            for cid in ids:
                deps.apicbase = ApicbaseClient(  # a new requests.Session: a new connection
                    authorize_url=settings.authorize_url,
                    token_url=settings.token_url,
                    introspect_url=settings.introspect_url,
                )
                result = refresh_connection(deps, cid, min_validity=settings.refresh_window_seconds)
                refreshed += result.outcome == REFRESHED
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
        after = stack.stub.stats()
    return RunFigures(
        n=n,
        concurrency=1,
        latency_ms=latency_ms,
        wall=wall,
        refreshed=refreshed,
        failed=n - refreshed,
        calls=counter.of("naive"),
        token_requests=after["token_requests"] - before["token_requests"],
        new_connections=after["connections_opened"] - before["connections_opened"],
        invalid_grants=after["invalid_grant"] - before["invalid_grant"],
        cpu=cpu,
        aws=counter.seconds["naive"],
    )
