"""Figures 1 and 4: cold start and peak memory of every function, each in a fresh interpreter,
interleaved round by round with the baselines (``import boto3, requests``; the same plus
Powertools' Tracer), so that a noisy neighbour slows all variants alike; and where the
callback's import time goes beyond the baseline's (``python -X importtime``).

"As shipped" is what Lambda runs: the output of ``sam build`` copied read-only and laid out as
Lambda mounts it (the layer, then the function, then the runtime's boto3, compiled as the runtime
ships it), imported with bytecode writes disabled and without the venv's site-packages, so a
module whose .pyc the build did not ship is compiled from source in every child, as on Lambda
(/opt and /var/task are read-only). The baseline as shipped is made the same way: requests as
our layer ships it. "Without bytecode" is the same copy with every .pyc removed from the layer
and the function (what SAM's python builder shipped). The "with .pyc" variants import the
sources and the venv's packages, compiled under a private PYTHONPYCACHEPREFIX filled by a warm-up
round not measured; only they run an invocation (the build's native wheels are arm64's).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.build import current_build
from local.runtime import limits

from apicbase_oauth.adapters.queue import encode

from . import harness as h
from .child import MARK
from .harness import Stack, median

BASELINE, TRACER = "baseline", "tracer"
SHIPPED = " as shipped"  # suffix of the variants that import `sam build`'s output read-only
BARE = " without bytecode"  # the same with no .pyc in the layer and the function
CALLBACK = "CallbackFunction"
CHILD = Path(__file__).with_name("child.py")
# What the Lambda runtime brings beside our layer: boto3 and its dependencies, compiled.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "dateutil", "six", "jmespath", "urllib3")


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


def _child(
    spec: dict[str, Any], env: dict[str, str], cwd: Path, *, importtime: bool = False, no_site: bool = False
) -> tuple[dict, str]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        flags = (["-X", "importtime"] if importtime else []) + (["-S"] if no_site else [])
        command = [sys.executable, *flags, str(CHILD), json.dumps(spec), out.name]
        done = subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return json.loads(Path(out.name).read_text()), done.stderr.decode()


@dataclass(frozen=True)
class LambdaCopy:
    """A read-only copy of `sam build`'s output as Lambda lays it out: the layer (/opt/python),
    each function (/var/task) and, after them on the path, the runtime's packages."""

    layer: Path
    tasks: dict[str, Path]
    runtime: Path

    def path(self, logical_id: str | None) -> str:
        task = [str(self.tasks[logical_id])] if logical_id else []
        return os.pathsep.join([*task, str(self.layer), str(self.runtime)])


def _runtime_packages(into: Path) -> Path:
    """boto3 and its dependencies from this venv, compiled as the Lambda runtime ships them."""
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        if spec.submodule_search_locations:
            shutil.copytree(spec.submodule_search_locations[0], into / name, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            into.mkdir(parents=True, exist_ok=True)
            shutil.copy2(spec.origin, into)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(into)], check=True)
    return into


def _lambda_copy(build: Path, into: Path, runtime: Path, names: list[str], *, bytecode: bool) -> LambdaCopy:
    ignore = None if bytecode else shutil.ignore_patterns("__pycache__")
    shutil.copytree(build / "BrokerLayer" / "python", into / "opt" / "python", ignore=ignore)
    for name in names:
        shutil.copytree(build / name, into / "task" / name, ignore=ignore)
    return LambdaCopy(into / "opt" / "python", {n: into / "task" / n for n in names}, runtime)


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _set_writable(root: Path, writable: bool) -> None:
    """Files and directories read-only (for anyone but root, whom _files checks instead)."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


class _Runner:
    """The specs and environments of the variants, the bytecode cache of the "with .pyc" ones, and
    the read-only copies of the build."""

    def __init__(self, stack: Stack, cache: Path) -> None:
        self.stack, self.functions = stack, h.tpl.functions(stack.template)
        # Nothing another function's environment left in this process (the scheduler's queue URL
        # would make the callback import the queue's adapter): each child gets its own below.
        theirs = {name for fn in self.functions.values() for name in fn.environment}
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "POWERTOOLS_", "PYTHON")) and k not in theirs
        }
        base.update(h.FAKE_CREDENTIALS)
        # where Lambda puts the layer: /opt/python
        self.compiled = {**base, "PYTHONPATH": str(h.LAYER), "PYTHONPYCACHEPREFIX": str(cache / "pyc")}
        self.readonly = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
        build = current_build(cache / "sam-build")
        runtime = _runtime_packages(cache / "runtime")
        names = list(self.functions)
        self.copies = {
            SHIPPED: _lambda_copy(build, cache / "shipped", runtime, names, bytecode=True),
            BARE: _lambda_copy(build, cache / "bare", runtime, [CALLBACK], bytecode=False),
        }

    def run(self, variant: str, *, importtime: bool = False) -> tuple[dict, str]:
        name, copy = variant, None
        for suffix in (SHIPPED, BARE):
            if variant.endswith(suffix):
                name, copy = variant.removesuffix(suffix), self.copies[suffix]
        fn = self.functions.get(name)
        env = {**self.compiled} if copy is None else {**self.readonly, "PYTHONPATH": copy.path(name if fn else None)}
        if fn is None:  # Tracer patches boto3 and requests only on Lambda
            env["AWS_LAMBDA_FUNCTION_NAME"] = "bench"
            return _child({"kind": name}, env, h.ROOT, importtime=importtime, no_site=copy is not None)
        path = fn.module_path if copy is None else copy.tasks[name] / fn.module_path.name
        timeout, _ = limits(self.stack.template, fn)
        spec = {
            "kind": "handler",
            "module_path": str(path),
            "function": name,
            "timeout": timeout,
            "dataclasses": importtime,
        }
        if not importtime and copy is None:  # the copies are measured for their import only
            spec["event"] = _event(self.stack, name)
        env.update(self.stack.env(name))
        return _child(spec, env, path.parent, importtime=importtime, no_site=copy is not None)


def run(stack: Stack, rounds: int) -> tuple[dict[str, Samples], ImportProfile]:
    if sys.version_info[:2] != (3, 13):  # the build's .pyc would be ignored, not measured
        raise RuntimeError("the cold starts need Python 3.13, the runtime's whose bytecode `sam build` ships")
    stack.seed_connections(["cold-token"], expires_in=h.ONE_WEEK)
    functions = list(h.tpl.functions(stack.template))
    variants = [
        BASELINE,
        TRACER,
        *functions,
        BASELINE + SHIPPED,
        *(f + SHIPPED for f in functions),
        BASELINE + BARE,
        CALLBACK + BARE,
    ]
    samples = {v: Samples() for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as cache:
        runner = _Runner(stack, Path(cache))
        copies = [Path(cache) / "runtime", *(c.layer.parent.parent for c in runner.copies.values())]
        before = {c: _files(c) for c in copies}
        for copy in copies:
            _set_writable(copy, False)
        try:
            for variant in variants:  # the warm-up: the "with .pyc" variants' modules compiled once
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
            profile = _profile(runner, max(rounds, 3))
        finally:
            for copy in copies:
                _set_writable(copy, True)
        if written := [c for c in copies if _files(c) != before[c]]:
            raise RuntimeError(f"a child wrote into the read-only copy {written[0]}")
        return samples, profile


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
        baseline = {name for name, _, _ in _parse(runner.run(BASELINE + SHIPPED, importtime=True)[1])}
        result, stderr = runner.run(CALLBACK + SHIPPED, importtime=True)
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
