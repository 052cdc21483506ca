"""Figures 1 and 4: cold start and peak memory of every function, each in a fresh interpreter,
interleaved round by round with the baselines (``import boto3, requests``; the same plus
Powertools' Tracer), so that a noisy neighbour slows all variants alike; and where the
callback's import time goes beyond the baseline's (``python -X importtime``).

boto3 comes with the Lambda runtime, taken here to be compiled (.pyc), so the children read
compiled modules too, under a private PYTHONPYCACHEPREFIX filled by a warm-up round not measured.
`sam build` unpacks the layer's wheels without compiling them and /opt is read-only, so on
Lambda the layer (Powertools, requests, our package) is compiled on every cold start: the
"from source" variants measure that, with only boto3's modules compiled beforehand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.runtime import limits

from apicbase_oauth.adapters.queue import encode

from . import harness as h
from .child import MARK
from .harness import Stack, median

BASELINE, TRACER = "baseline", "tracer"
SOURCE = " from source"  # suffix of the variants that compile everything but boto3 at import
CALLBACK = "CallbackFunction"
CHILD = Path(__file__).with_name("child.py")


@dataclass
class Samples:
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return median([r[key] for r in self.runs if key in r])


@dataclass
class ImportProfile:
    """The callback's imports beyond the baseline's, medians over rounds of -X importtime."""

    subtrees: list[tuple[str, str, float, float]]  # (module, imported by, extra cumulative us, self us)
    packages: dict[str, float]  # self us of the modules the baseline does not import, by top package
    dataclasses: float  # CPU seconds creating our package's dataclasses during the import
    dataclass_count: int
    body: float  # seconds in app.py's own code (its module body), not in any import
    rounds: int


def _event(stack: Stack, logical_id: str) -> dict[str, Any]:
    """Each function's test invocation, with fresh data so that every run does the full work."""
    if logical_id == CALLBACK:
        return h.callback_event(stack)
    if logical_id == "ConnectionsFunction":  # fresh for a week: GET /token reads and decrypts, no refresh
        return h.http_event(stack.template, "GET", "/connections/cold-token/token")
    if logical_id == "RefreshSchedulerFunction":
        return h.schedule_event()
    cid = f"cold-{uuid.uuid4().hex[:12]}"
    stack.seed_connections([cid], expires_in=3600)  # due: the worker refreshes it
    body = encode(cid, int(time.time()))
    message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex, "Body": body, "MD5OfBody": "0" * 32}
    return h.sqs_event([message], stack)


def _child(spec: dict[str, Any], env: dict[str, str], cwd: Path, *, importtime: bool = False) -> tuple[dict, str]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        flags = ["-X", "importtime"] if importtime else []
        command = [sys.executable, *flags, str(CHILD), json.dumps(spec), out.name]
        done = subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return json.loads(Path(out.name).read_text()), done.stderr.decode()


class _Runner:
    """The specs and environments of the variants, and the two bytecode caches."""

    def __init__(self, stack: Stack, cache: str) -> None:
        self.stack, self.functions = stack, h.tpl.functions(stack.template)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHONDONT"))}
        base.update(h.FAKE_CREDENTIALS, PYTHONPATH=str(h.LAYER))  # where Lambda puts the layer: /opt/python
        self.compiled = {**base, "PYTHONPYCACHEPREFIX": f"{cache}/all"}
        self.source = {**base, "PYTHONPYCACHEPREFIX": f"{cache}/boto3"}
        subprocess.run([sys.executable, "-c", "import boto3"], env=self.source, check=True)
        self.source["PYTHONDONTWRITEBYTECODE"] = "1"

    def run(self, variant: str, *, importtime: bool = False) -> tuple[dict, str]:
        name = variant.removesuffix(SOURCE)
        env = self.source if variant.endswith(SOURCE) else self.compiled
        if name not in self.functions:  # Tracer patches boto3 and requests only on Lambda
            return _child({"kind": name}, {**env, "AWS_LAMBDA_FUNCTION_NAME": "bench"}, h.ROOT, importtime=importtime)
        path = self.functions[name].module_path
        timeout, _ = limits(self.stack.template, self.functions[name])
        spec = {
            "kind": "handler",
            "module_path": str(path),
            "function": name,
            "timeout": timeout,
            "dataclasses": importtime,
        }
        if not importtime and variant == name:  # the from-source variants are measured for their import only
            spec["event"] = _event(self.stack, name)
        return _child(spec, {**env, **self.stack.env(name)}, path.parent, importtime=importtime)


def run(stack: Stack, rounds: int) -> tuple[dict[str, Samples], ImportProfile]:
    stack.seed_connections(["cold-token"], expires_in=h.ONE_WEEK)
    variants = [BASELINE, TRACER, *h.tpl.functions(stack.template), BASELINE + SOURCE, CALLBACK + SOURCE]
    samples = {v: Samples() for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-pyc-") as cache:
        runner = _Runner(stack, cache)
        for variant in variants:  # the warm-up: every module compiled once
            runner.run(variant)
        for round_no in range(rounds):
            # Rotate the order each round: no variant always runs first (or right after a heavy one).
            shift = round_no % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                result = runner.run(variant)[0]
                answer = result.get("answer", 200)  # a status code, or the scheduler's or worker's dict
                if answer != 200 and (not isinstance(answer, dict) or answer.get("batchItemFailures")):
                    raise RuntimeError(f"{variant}'s first invocation answered {answer}")
                samples[variant].runs.append(result)
        return samples, _profile(runner, max(rounds, 3))


def _parse(importtime: str) -> list[tuple[str, int, int]]:
    """(module, depth, self us) in the order -X importtime prints them: children first."""
    out = []
    for line in importtime.rsplit(MARK, maxsplit=1)[-1].splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = line.removeprefix("import time:").split("|")
            out.append((name.strip(), (len(name) - len(name.lstrip()) - 1) // 2, int(self_us)))
    return out


def _profile(runner: _Runner, rounds: int) -> ImportProfile:
    """The callback's import tree, each module's time counted only where the baseline does not
    import it: a subtree's extra cumulative time is what importing it costs beyond the baseline."""
    seen: dict[str, list[tuple[str, int, int]]] = defaultdict(list)  # module -> (imported by, extra cum., self)
    packages: dict[str, list[float]] = defaultdict(list)
    dataclasses: list[float] = []
    body: list[float] = []
    for _ in range(rounds):
        baseline = {name for name, _, _ in _parse(runner.run(BASELINE, importtime=True)[1])}
        result, stderr = runner.run(CALLBACK, importtime=True)
        dataclasses.append(result["dataclasses_cpu"])
        tree: dict[str, list[Any]] = {}  # module -> [imported by, extra cumulative us, extra self us]
        pending: dict[int, list[str]] = defaultdict(list)  # modules waiting for their importer, by depth
        for name, depth, self_us in _parse(stderr):
            extra = 0 if name in baseline else self_us
            children = pending.pop(depth + 1, [])
            for child in children:
                tree[child][0] = name
            tree[name] = ["app.py", extra + sum(tree[c][1] for c in children), extra, self_us]
            pending[depth].append(name)
        # The import's time outside every module importtime saw (baseline ones included): app.py's own.
        body.append(result["import_wall"] - sum(self_us for _, _, self_us in _parse(stderr)) / 1e6)
        by_package: Counter[str] = Counter()
        for name, (parent, cumulative, extra, _) in tree.items():
            seen[name].append((parent, cumulative, extra))
            by_package[name.split(".")[0]] += extra
        for package, us in by_package.items():
            packages[package].append(us)
    rows = [
        (
            name,
            Counter(p for p, _, _ in entries).most_common(1)[0][0],
            median([float(c) for _, c, _ in entries]),
            median([float(s) for _, _, s in entries]),
        )
        for name, entries in seen.items()
    ]
    package_us = {p: median(us) for p, us in packages.items()}
    return ImportProfile(
        subtrees=sorted(rows, key=lambda row: -row[2]),
        packages={p: us for p, us in sorted(package_us.items(), key=lambda kv: -kv[1]) if us > 0},
        dataclasses=median(dataclasses),
        dataclass_count=int(result["dataclasses"]),
        body=median(body),
        rounds=rounds,
    )
