"""Each function of the template in its own pool of worker processes, as Lambda runs containers.

A worker (``python -m local.runtime``) takes one event at a time and keeps its module state
between events. Workers start on demand up to the pool's size (a cold start, in the request
that needed it); a request that finds them all busy waits for one. A worker that dies is
replaced by the next cold start and its request fails with 502, as API Gateway answers; one
that outlives the function's timeout is killed, as Lambda does. Each worker enforces its
function's role on every AWS call (local/iam.py) and reports each refused call at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from local import template as tpl

COLD_START_SECONDS = 60
STOP_SECONDS = 3
DEFAULT_POOL_SIZE = 4
# What a worker inherits from this process; everything else is the function's own environment.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")

# Told of each AWS call a worker's role refused: (function, description).
OnRefusal = Callable[[str, str], None]


class FunctionError(Exception):
    """An invocation without an answer from the handler; ``status`` and ``message`` are what
    API Gateway answers, ``detail`` is for the log (never request data)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def message(self) -> str:
        return "Service Unavailable" if self.status == 503 else "Internal Server Error"


class WorkerStartError(Exception):
    """A worker could not import its handler; the text says why, in one line."""


def pool_size(template: dict[str, Any], fn: tpl.Function, refs: Mapping[str, str], overrides: Mapping[str, int]) -> int:
    """An override, else the reserved concurrency, else an SQS event source's MaximumConcurrency,
    else DEFAULT_POOL_SIZE. Values the template leaves to a condition count as absent."""
    if fn.logical_id in overrides or "*" in overrides:
        return overrides.get(fn.logical_id, overrides.get("*", DEFAULT_POOL_SIZE))
    candidates = [fn.properties.get("ReservedConcurrentExecutions")]
    candidates += [
        (event.get("Properties", {}).get("ScalingConfig") or {}).get("MaximumConcurrency")
        for event in fn.events.values()
        if event.get("Type") == "SQS"
    ]
    for candidate in candidates:
        try:
            size = int(tpl.resolve(candidate, dict(refs)))
        except (KeyError, TypeError, ValueError):
            continue
        if size > 0:
            return size
    return DEFAULT_POOL_SIZE


class Worker:
    """One ``python -m local.runtime`` process and its line protocol. It starts with only the
    basics of this process's environment and gets the function's own (and its role) with ``start``."""

    def __init__(self, template_path: Path, logical_id: str, on_refusal: OnRefusal | None = None) -> None:
        self.logical_id = logical_id
        self.on_refusal = on_refusal
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "local.runtime", str(template_path), logical_id],
            cwd=tpl.ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._pending = b""

    def start(self, env: Mapping[str, str], iam: Mapping[str, Any] | None = None) -> None:
        """Hand the worker its function's environment and role (local/iam.py's ``worker_setup``;
        None: not enforced), then wait until its handler is imported."""
        self._send({"environment": dict(env), "iam": iam})
        self.wait_ready()

    def wait_ready(self) -> None:
        answer = self._read(COLD_START_SECONDS)
        if answer.get("ready"):
            return
        raise WorkerStartError(answer.get("message") or f"its handler failed to import: {answer.get('error')}")

    def call(self, event: dict[str, Any], timeout: float) -> Any:
        self._send(event)
        answer = self._read(timeout)
        if "error" in answer:
            raise FunctionError(500, f"raised {answer['error']}")
        return answer["result"]

    def _send(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise FunctionError(502, self._death()) from None

    def _read(self, timeout: float) -> dict[str, Any]:
        """The next answer; refusals reported on the way are handed to ``on_refusal``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_line(deadline, timeout)
            if "refused" not in message:
                return message
            if self.on_refusal is not None:
                self.on_refusal(self.logical_id, str(message["refused"]))

    def _read_line(self, deadline: float, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.kill()
                raise FunctionError(500, f"timed out after {timeout:g} s (the worker was stopped)")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise FunctionError(502, self._death())
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return dict(json.loads(line))

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        return f"worker process died (exit code {code})"

    def close_input(self) -> None:
        """Ask the worker to stop after its current event (it exits at the end of its input)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()

    def kill(self) -> None:
        self.close_input()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class Pool:
    """The workers of one function: at most ``size`` processes, each one event at a time;
    ``spare``, a worker started before the environment was known, is the first."""

    def __init__(
        self,
        logical_id: str,
        template_path: Path,
        env: Mapping[str, str],
        *,
        size: int,
        timeout: float,
        spare: Worker | None = None,
        iam: Mapping[str, Any] | None = None,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self.logical_id = logical_id
        self.size = size
        self.timeout = timeout
        self._template_path = template_path
        self._env = dict(env)
        self._iam = iam
        self._on_refusal = on_refusal
        self._idle: list[Worker] = []
        self._spare = spare
        self._workers: set[Worker] = {spare} if spare else set()
        self._starting = 0
        self._closed = False
        self._changed = threading.Condition()

    def invoke(self, event: dict[str, Any]) -> Any:
        try:
            worker = self._acquire()
        except WorkerStartError as exc:
            raise FunctionError(502, f"cold start failed: {exc}") from None
        try:
            result = worker.call(event, self.timeout)
        except FunctionError as exc:
            if exc.status != 500 or worker.process.poll() is not None:
                self._discard(worker)
            else:
                self._release(worker)
            raise
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return result

    def warm(self) -> None:
        """Start one worker now (a StartupError's material if the handler cannot import)."""
        self._release(self._acquire())

    @property
    def processes(self) -> int:
        with self._changed:
            return len(self._workers)

    def _acquire(self) -> Worker:
        with self._changed:
            while True:
                # A worker that died while idle is not used again (Lambda would not either).
                for dead in [worker for worker in self._idle if worker.process.poll() is not None]:
                    self._idle.remove(dead)
                    self._workers.discard(dead)
                    dead.kill()  # closes its pipes
                if self._idle or self._spare or self._closed or len(self._workers) + self._starting < self.size:
                    break
                self._changed.wait()
            if self._closed:
                raise FunctionError(503, "the local stack is stopping")
            if self._idle:
                return self._idle.pop()
            worker, self._spare = self._spare, None
            if worker is None:
                self._starting += 1  # a slot taken while its process starts
        try:
            if worker is None:
                worker = self._spawn()
            worker.start(self._env, self._iam)
        except BaseException:
            if worker is not None:
                self._discard(worker)
            raise
        return worker

    def _spawn(self) -> Worker:
        worker = None
        try:
            worker = Worker(self._template_path, self.logical_id, self._on_refusal)
            return worker
        finally:
            with self._changed:
                self._starting -= 1
                if worker is not None:
                    self._workers.add(worker)
                self._changed.notify_all()

    def _release(self, worker: Worker) -> None:
        with self._changed:
            if self._closed:
                worker.close_input()
            else:
                self._idle.append(worker)
            self._changed.notify_all()

    def _discard(self, worker: Worker) -> None:
        worker.kill()
        with self._changed:
            self._workers.discard(worker)
            self._changed.notify_all()

    def close(self) -> None:
        """No new events; idle workers end now, busy ones after their event."""
        with self._changed:
            self._closed = True
            workers = list(self._workers)
            self._changed.notify_all()
        for worker in workers:
            worker.close_input()

    def join(self, deadline: float) -> None:
        """Wait until every worker has exited, killing those still running at ``deadline``."""
        with self._changed:
            workers = list(self._workers)
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            worker.kill()  # if still running; and its pipes closed either way
