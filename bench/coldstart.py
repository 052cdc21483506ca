"""Figures 1 and 5: cold start and peak memory of every function, each in a fresh interpreter,
interleaved with the baselines (``import boto3, requests``; the same plus Powertools'
Tracer; the same plus the Powertools modules the handlers use) round by round, so that a
noisy neighbour slows all variants alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apicbase_oauth.adapters.queue import encode

from . import harness as h
from .harness import Stack, median

BASELINE = "baseline"
TRACER = "tracer"
POWERTOOLS = "powertools"
CHILD = Path(__file__).with_name("child.py")


@dataclass
class Samples:
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return median([r[key] for r in self.runs if key in r])


def _events(stack: Stack, logical_id: str) -> dict[str, Any]:
    """The test invocation of each function, with fresh data so every run does the full work."""
    if logical_id == "CallbackFunction":
        return h.callback_event(stack)
    if logical_id == "ConnectionsFunction":
        # Fresh for a week: GET /token reads and decrypts, and does not refresh.
        return h.http_event(stack.template, "GET", "/connections/cold-token/token")
    if logical_id == "RefreshSchedulerFunction":
        return h.schedule_event()
    if logical_id == "RefreshWorkerFunction":
        cid = f"cold-{uuid.uuid4().hex[:12]}"
        stack.seed_connections([cid], expires_in=3600)  # due: the worker refreshes it
        message = {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": uuid.uuid4().hex,
            "Body": encode(cid, int(time.time())),
            "MD5OfBody": "0" * 32,
        }
        return h.sqs_event([message], h.queue_arn(stack))
    raise KeyError(logical_id)


def _run_child(spec: dict[str, Any], env: dict[str, str], cwd: Path) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(CHILD), json.dumps(spec), out.name],
            env=env,
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        return dict(json.loads(Path(out.name).read_text()))


def run(stack: Stack, rounds: int) -> dict[str, Samples]:
    functions = h.tpl.functions(stack.template)
    stack.seed_connections(["cold-token"], expires_in=h.ONE_WEEK)
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))},
        **h.FAKE_CREDENTIALS,
        "PYTHONPATH": str(h.LAYER),  # where Lambda puts the layer: /opt/python
    }
    variants = [BASELINE, TRACER, POWERTOOLS, *functions]
    samples = {v: Samples() for v in variants}
    for round_no in range(rounds):
        # Rotate the order each round: no variant always runs first (or right after a heavy one).
        shift = round_no % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            if variant in functions:
                fn = functions[variant]
                spec = {
                    "kind": "handler",
                    "module_path": str(fn.module_path),
                    "function": variant,
                    "event": _events(stack, variant),
                }
                env = {**base_env, **stack.env(variant)}
                cwd = fn.module_path.parent
            else:
                spec = {"kind": variant}
                env = {**base_env, "AWS_LAMBDA_FUNCTION_NAME": "bench"}  # Tracer patches only on Lambda
                cwd = h.ROOT
            samples[variant].runs.append(_run_child(spec, env, cwd))
    return samples
