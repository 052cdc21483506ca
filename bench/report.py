"""The table and docs/BENCHMARKS.md, from the figures of one run."""

from __future__ import annotations

import datetime
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import harness as h
from .callback import EXTRA_REASONS, MINIMUM, CallbackFigures
from .coldstart import BASELINE, POWERTOOLS, TRACER, Samples
from .harness import median
from .query import QueryFigures
from .refresh import RunFigures

CALLBACK_CPU_TARGET_MS = 10.0
COLD_RATIO_TARGET = 1.3
EFFICIENCY_TARGET = 0.8
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one vCPU at 1,769 MB, in proportion below


@dataclass
class Results:
    sizes: Any
    quick: bool
    query: QueryFigures | None = None
    cold: dict[str, Samples] | None = None
    callback: CallbackFigures | None = None
    pipeline: RunFigures | None = None
    pipeline_floor: RunFigures | None = None
    pipeline_memory: list[RunFigures] = field(default_factory=list)  # the in-memory AWS variants
    naive: RunFigures | None = None
    seconds: float = 0.0
    command: str = "python -m bench"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def paired_ratio(cold: dict[str, Samples], variant: str, key: str) -> float:
    """The median of per-round ratios: each against the baseline of the same round."""
    pairs = zip(cold[variant].runs, cold[BASELINE].runs, strict=True)
    return median([run[key] / base[key] for run, base in pairs])


def functions(results: Results) -> list[str]:
    assert results.cold
    return [v for v in results.cold if v not in (BASELINE, TRACER, POWERTOOLS)]


def memory_sizes() -> dict[str, int]:
    template = h.tpl.load()
    default = int(template["Globals"]["Function"].get("MemorySize", 128))
    return {k: int(f.properties.get("MemorySize", default)) for k, f in h.tpl.functions(template).items()}


def per_refresh(run: RunFigures) -> dict[str, float]:
    kinds = h.by_kind(Counter({k: v for k, v in run.calls.items()}))
    return {k: v / run.n for k, v in kinds.items()}


def lambda_seconds_per_refresh(run: RunFigures, memory_mb: int) -> float:
    """A container's time per refresh on Lambda, estimated from an in-memory run: the token
    latency, the AWS calls' latency in sequence, and our CPU at MemorySize's share of a vCPU."""
    aws_calls = sum(v for (svc, _), v in run.calls.items() if svc != "sqs") / run.n
    vcpu = min(memory_mb / LAMBDA_MB_PER_VCPU, 1.0)
    return (run.latency_ms + aws_calls * (run.aws_latency_ms or 0)) / 1000 + run.cpu / run.n / vcpu


def _efficiency_row(run: RunFigures, full_n: int) -> tuple[str, str, str, str]:
    # moto's server measures fewer refreshes, to keep the run short (see the method).
    measured = f" (of {full_n}, fewer to keep the run short)" if run.n != full_n else ""
    return (
        f"3. refresh {run.n}{measured} at C={run.concurrency}, {run.latency_ms:g} ms token endpoint, {run.backend}",
        f"{run.wall:.1f} s (ideal {run.ideal:.1f} s): efficiency {run.efficiency:.2f}; "
        f"our CPU {_ms(run.cpu / run.n)} per refresh",
        f">= {EFFICIENCY_TARGET}",
        _verdict(run.efficiency >= EFFICIENCY_TARGET),
    )


def rows(results: Results) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, met)."""
    out: list[tuple[str, str, str, str]] = []
    cold = results.cold
    if cold:
        base = cold[BASELINE]
        out.append(
            (
                "1. baseline `import boto3, requests`",
                f"{_ms(base.median('import_cpu'))} CPU, {_ms(base.median('import_wall'))} wall",
                "",
                "",
            )
        )
        for fn in functions(results):
            ratio = paired_ratio(cold, fn, "import_cpu")
            out.append(
                (
                    f"1. cold import {fn}",
                    f"{_ms(cold[fn].median('import_cpu'))} CPU, {_ms(cold[fn].median('import_wall'))} wall; "
                    f"x{ratio:.2f} CPU, x{paired_ratio(cold, fn, 'import_wall'):.2f} wall",
                    f"x{COLD_RATIO_TARGET} of baseline",
                    _verdict(ratio <= COLD_RATIO_TARGET),
                )
            )
        powertools_extra = cold[POWERTOOLS].median("import_cpu") - base.median("import_cpu")
        out.append(
            (
                "1. baseline + the Powertools modules the handlers use",
                f"+{_ms(powertools_extra)} CPU over the baseline (x{paired_ratio(cold, POWERTOOLS, 'import_cpu'):.2f})",
                "",
                "",
            )
        )
        tracer_extra = cold[TRACER].median("import_cpu") - base.median("import_cpu")
        out.append(
            (
                "1. Powertools Tracer (imports aws_xray_sdk)",
                f"+{_ms(tracer_extra)} CPU over the baseline (x{paired_ratio(cold, TRACER, 'import_cpu'):.2f})",
                "decide",
                "not used",
            )
        )
        for fn in functions(results):
            out.append(
                (
                    f"1. first invocation {fn}",
                    f"{_ms(cold[fn].median('invoke_wall'))} wall, {_ms(cold[fn].median('invoke_cpu'))} CPU",
                    "",
                    "",
                )
            )
    cb = results.callback
    if cb:
        cpu = median(cb.cpu)
        extra = sorted(k for k, n in cb.calls.items() if n > MINIMUM.get(k, 0))
        out.append(("2. warm callback, wall", _ms(median(cb.wall)), "", ""))
        out.append(
            (
                "2. warm callback, our CPU",
                f"{_ms(cpu)}; the same calls made bare: {_ms(median(cb.bare_cpu))}",
                f"<= {CALLBACK_CPU_TARGET_MS:g} ms",
                _verdict(cpu * 1000 <= CALLBACK_CPU_TARGET_MS),
            )
        )
        out.append(
            (
                "2. calls per callback",
                f"{sum(cb.calls.values()):g} ({', '.join(f'{s}:{o}' for s, o in extra) or 'none'} beyond the minimum)",
                f"compare: minimum {sum(MINIMUM.values())}",
                "see below" if extra else "at the minimum",
            )
        )
    run, floor, naive = results.pipeline, results.pipeline_floor, results.naive
    if run and naive:
        full_n = results.sizes.refreshes
        out.append(_efficiency_row(run, full_n))
        out.append(
            (
                "3. same, less the emulator's time",
                f"{run.wall_without_emulator:.1f} s: efficiency {run.ideal / run.wall_without_emulator:.2f}"
                + (f"; 0 ms token endpoint: {floor.wall:.1f} s" if floor else ""),
                f">= {EFFICIENCY_TARGET}",
                _verdict(run.ideal / run.wall_without_emulator >= EFFICIENCY_TARGET),
            )
        )
        out += [_efficiency_row(memory, full_n) for memory in results.pipeline_memory]
        checked = [f for f in (run, floor, *results.pipeline_memory) if f]
        out.append(
            (
                f"3. checked after each of the {len(checked)} runs",
                "refreshed exactly once: "
                + ", ".join(f"{f.refreshed}/{f.n}" for f in checked)
                + "; live refresh tokens == stored: "
                + ", ".join("yes" if f.tokens_match else "**no**" for f in checked),
                "every connection once, no token lost",
                _verdict(all(f.refreshed == f.n and f.tokens_match for f in checked)),
            )
        )
        naive_each = naive.wall / naive.n
        speedup = naive_each * run.n / run.wall
        out.append(
            (
                f"3. naive sequential ({naive.n} measured, per refresh x {run.n})",
                f"{_ms(naive_each)} per refresh -> {naive_each * run.n:.0f} s; pipeline x{speedup:.1f} faster",
                "",
                "",
            )
        )
        cost = per_refresh(run)
        out.append(
            (
                "4. DynamoDB writes per refresh",
                f"{cost.get('dynamodb_write', 0):.2f} (reads {cost.get('dynamodb_read', 0):.3f})",
                "<= 3",
                _verdict(cost.get("dynamodb_write", 0) <= 3),
            )
        )
        out.append(("4. KMS calls per refresh", f"{cost.get('kms', 0):.2f}", "<= 3", _verdict(cost.get("kms", 0) <= 3)))
        secrets = cost.get("secretsmanager", 0) * run.n
        out.append(
            (
                "4. Secrets Manager reads, whole run",
                f"{secrets:g} for {run.concurrency} containers sharing one process cache",
                "<= 1 per container",
                _verdict(secrets <= run.concurrency),
            )
        )
    q = results.query
    if q:
        out.append(
            (
                f"4. scheduler Query, {q.total:,} connections, {q.due} due",
                f"{q.scanned} items read ({q.pages} page(s), {q.capacity_units:g} RCU reported), {q.queued} queued",
                "~ due items",
                _verdict(q.scanned <= q.due * 1.1),
            )
        )
    if cold:
        sizes = memory_sizes()
        for fn in functions(results):
            out.append(
                (
                    f"5. peak RSS {fn}",
                    f"{cold[fn].median('maxrss_mb'):.0f} MB (baseline {cold[BASELINE].median('maxrss_mb'):.0f} MB)",
                    f"MemorySize {sizes[fn]} MB",
                    _verdict(cold[fn].median("maxrss_mb") * 1.5 <= sizes[fn]),
                )
            )
    return out


def table(results: Results) -> str:
    lines = ["| Figure | Measured (median) | Target | Met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs (`nproc`), Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def _calls_line(calls: Counter[tuple[str, str]], per: float) -> str:
    return h.describe_calls(Counter({k: v for k, v in calls.items()}), per)


def markdown(results: Results) -> str:
    head = TEMPLATE_HEAD.format(
        machine=machine(), command=results.command, seconds=results.seconds, sizes=results.sizes
    )
    parts = [head, table(results)]
    if results.callback:
        cb = results.callback
        parts.append(
            "\nCalls per warm callback: "
            + _calls_line(cb.calls, 1)
            + f"; new TCP connections to Apicbase per callback: {cb.new_connections:.2f}."
        )
        for (service, operation), n in sorted(cb.calls.items()):
            if n > MINIMUM.get((service, operation), 0):
                reason = EXTRA_REASONS.get((service, operation), "not explained by the benchmark")
                parts.append(f"Beyond the minimum, {service}:{operation}: {reason}.")
    if results.pipeline:
        run = results.pipeline
        parts.append(
            f"\nCalls for {run.n} refreshes (scheduler and workers): {_calls_line(run.calls, 1)}; "
            f"token requests {run.token_requests}, new TCP connections to Apicbase {run.new_connections}, "
            f"invalid_grant {run.invalid_grants}, refreshed and stored {run.refreshed}, failed {run.failed}. "
            f"Per refresh: our CPU {_ms(run.cpu / run.n)}, time inside AWS calls {_ms(run.aws / run.n)}."
        )
        for figures in (run, results.pipeline_floor):
            if figures and figures.emulator_cpu is not None:
                parts.append(
                    f"With a {figures.latency_ms:g} ms token endpoint, moto's server used "
                    f"{figures.emulator_cpu:.1f} s of CPU in the {figures.wall:.1f} s run "
                    f"({figures.emulator_cpu / figures.wall:.0%} of one core), "
                    f"{_ms(figures.emulator_cpu / figures.n)} per refresh; this process's handlers "
                    f"used {figures.cpu:.1f} s."
                )
    for memory in results.pipeline_memory:
        parts.append(
            f"With the {memory.backend} ({memory.n} refreshes): {_calls_line(memory.calls, 1)}; "
            f"invalid_grant {memory.invalid_grants}, refreshed and stored {memory.refreshed}, failed "
            f"{memory.failed}. Per refresh: our CPU {_ms(memory.cpu / memory.n)}, time inside AWS calls "
            f"{_ms(memory.aws / memory.n)}; {memory.cpu:.1f} s of CPU in all, in one process, in a "
            f"{memory.wall:.1f} s run."
        )
    if results.naive:
        nv = results.naive
        parts.append(
            f"\nNaive refresher ({nv.n} refreshes): {_calls_line(nv.calls, nv.n)} per refresh; "
            f"new TCP connections {nv.new_connections}; our CPU {_ms(nv.cpu / nv.n)} per refresh."
        )
    if results.query:
        q = results.query
        parts.append(
            f"\nSeeding {q.total:,} items took {q.seed_seconds:.1f} s: {q.seed_api_rate:,.0f} items/s through "
            f"batch_write_item, {q.seed_backend_rate:,.0f} items/s straight into moto's backend. "
            f"The scheduler's run took {q.query_seconds:.1f} s in moto (moto evaluates the key condition "
            "over the whole index in Python; DynamoDB reads only the matching range)."
        )
    parts.append(notes(results))
    parts.append(TEMPLATE_BODY)
    if results.cold:
        parts.append(decisions(results))
    parts.append(REPRODUCE)
    return "\n".join(parts) + "\n"


def notes(results: Results) -> str:
    """What holds each missed target back, in the run's own numbers."""
    out = ["\n## Where a target is missed, and why\n"]
    cold, cb, run, floor = results.cold, results.callback, results.pipeline, results.pipeline_floor
    if cold:
        ratios = [paired_ratio(cold, fn, "import_cpu") for fn in functions(results)]
        if max(ratios) > COLD_RATIO_TARGET:
            base = cold[BASELINE].median("import_cpu")
            ours = median([cold[fn].median("import_cpu") - base for fn in functions(results)])
            powertools = cold[POWERTOOLS].median("import_cpu") - base
            out.append(
                f"- **Cold start** (x{min(ratios):.2f}-x{max(ratios):.2f} of the baseline in CPU). A handler "
                f"adds {_ms(ours)} to `import boto3, requests`; the Powertools modules the handlers use "
                f"are {_ms(powertools)} of it on their own (the event handler package imports every "
                "resolver Powertools has, AppSync, Bedrock and OpenAPI included, and asyncio). Our "
                "package and the boto3 session are the rest. The boto3 clients are not built at import "
                "any more (`deps.LazyClient`): a function builds the clients it calls on first use, "
                "which the first-invocation figures include, and never builds the others (the scheduler "
                "has no use for KMS or EventBridge). The first client costs most (botocore lists its "
                "service directories and parses its endpoint rules), whichever function builds it. "
                "Going lower means dropping Powertools' resolver from the HTTP handlers."
            )
    if cb and median(cb.cpu) * 1000 > CALLBACK_CPU_TARGET_MS:
        calls = sum(cb.calls.values())
        bare = median(cb.bare_cpu)
        out.append(
            f"- **Callback CPU** ({_ms(median(cb.cpu))}). The same {calls:g} calls made bare (plain "
            f"botocore clients and a requests.Session, interleaved with the callbacks) cost {_ms(bare)}: "
            f"that is botocore's and the HTTP stack's per-call work (signing, serialising, parsing), "
            f"and the handler, the use case, Powertools and boto3's resource layer add "
            f"{_ms(median(cb.cpu) - bare)}. moto's server closes every connection, so each AWS call "
            "here also opens a TCP connection that botocore would keep alive on AWS."
        )
    if run and run.efficiency < EFFICIENCY_TARGET:
        aws_calls = sum(v for (svc, _), v in run.calls.items() if svc != "sqs") / run.n
        out.append(
            f"- **Refresh throughput** (efficiency {run.efficiency:.2f}). The emulator is the "
            f"bottleneck: moto's server answers every AWS call in one Python process on the same "
            f"2 cores, and each refresh spends {_ms(run.aws / run.n)} inside its {aws_calls:.0f} AWS "
            f"calls (lease, Decrypt, Encrypt, save), against {run.latency_ms:g} ms at the token "
            "endpoint"
            + (
                f"; moto's server was busy {run.emulator_cpu / run.wall:.0%} of the run on one core"
                if run.emulator_cpu is not None
                else ""
            )
            + (
                f". With a 0 ms token endpoint the same run takes {floor.wall:.1f} s "
                f"({run.wall:.1f} s with {run.latency_ms:g} ms): the latency hides behind the emulator's work"
                if floor
                else ""
            )
            + ". The C workers are threads of one process here, so their CPU shares one core "
            f"({_ms(run.cpu / run.n)} per refresh, {run.cpu:.0f} s in all against an ideal of "
            f"{run.ideal:.0f} s), where Lambda gives each container its own. On AWS the four calls "
            "are in-region round trips of a few milliseconds each (simulated in the next point); they are "
            "sequential by design (the rotated token is stored before anything else), so a "
            "container's time per refresh is the token latency plus four round trips plus its "
            "CPU at its MemorySize's share of a vCPU."
        )
    memory = [m for m in results.pipeline_memory if m.efficiency < EFFICIENCY_TARGET]
    if memory:
        worker_mb = memory_sizes()["RefreshWorkerFunction"]
        estimates = ", ".join(
            f"{_ms(lambda_seconds_per_refresh(m, worker_mb))} with {m.aws_latency_ms:g} ms per AWS call "
            f"(efficiency {m.latency_ms / 1000 / lambda_seconds_per_refresh(m, worker_mb):.2f})"
            for m in memory
        )
        out.append(
            "- **Refresh throughput without the emulator** (efficiency "
            + ", ".join(f"{m.efficiency:.2f} with {m.aws_latency_ms:g} ms per AWS call" for m in memory)
            + "). With AWS answered from memory the run is bound by our own CPU: the C workers are "
            "threads of one process sharing its GIL, so every refresh's CPU ("
            + ", ".join(f"{_ms(m.cpu / m.n)}" for m in memory)
            + f" per refresh, {memory[0].cpu:.0f} s in all) is spent one thread at a time, against an "
            f"ideal wall time of {memory[0].ideal:.0f} s; a simulated AWS latency costs no CPU and "
            "hides behind the other threads' work. That CPU is the SDK's and the HTTP stack's "
            "per-call work for four AWS calls and one token request (figure 2 shows the same split "
            "for the callback), the handler and Powertools' logging and metrics. On Lambda each "
            f"container has its own CPU, at the worker's MemorySize ({worker_mb} MB) "
            f"{min(worker_mb / LAMBDA_MB_PER_VCPU, 1.0):.2f} vCPU: a refresh would take about the token "
            "latency plus the AWS calls in sequence plus this CPU scaled up, "
            + estimates
            + ", an estimate from this machine's CPU time, not a measurement. More workers "
            "(reserved concurrency) or a larger MemorySize buy throughput; the per-refresh "
            "sequence (lease, Decrypt, token request, Encrypt, save) stays sequential by design."
        )
    if len(out) == 1:
        out.append("Every target is met in this run.")
    return "\n".join(out)


def decisions(results: Results) -> str:
    assert results.cold
    cold = results.cold
    base = cold[BASELINE].median("import_cpu")
    tracer = cold[TRACER].median("import_cpu") - base
    ours = median([cold[fn].median("import_cpu") - base for fn in functions(results)])
    rss = [cold[fn].median("maxrss_mb") for fn in functions(results)]
    sizes = memory_sizes()
    return DECISIONS.format(
        tracer=_ms(tracer),
        ours=_ms(ours),
        rss_low=min(rss),
        rss_high=max(rss),
        **{f"size_{k}": v for k, v in sizes.items()},
    )


TEMPLATE_HEAD = """# Benchmarks

Written by `python -m bench` (see "How to reproduce"); do not edit by hand, edit `bench/`.

Machine: {machine}. Command: `{command}`, run time {seconds:.0f} s. Sizes: {sizes}.

Every figure is the median of repeated runs; every ratio is measured side by side in the same
run, variants interleaved round by round. CPU times are this process's (or this thread's) own:
moto's server and the fake Apicbase run in separate processes. Wall times on a shared
2-core machine are noisy; ratios and CPU times are the figures to compare.
"""

TEMPLATE_BODY = """
## Method

1. **Cold start**: each function's module is imported in a fresh Python process with the
   environment the template gives it (`local.aws.function_environment`), fake credentials and
   `AWS_ENDPOINT_URL` pointing at moto's server; the import makes no calls (the boto3 clients
   are built on first use). The baseline is `import boto3, requests` in a fresh process; the Tracer
   variant is the baseline plus `from aws_lambda_powertools import Tracer; Tracer()` (with
   `AWS_LAMBDA_FUNCTION_NAME` set, so that it patches boto3 and requests as on Lambda). The
   order of the variants rotates every round. The same process then runs one invocation
   (the first one: clients are built and connect, the secret is read) against moto's server and the fake
   Apicbase, and reports its peak RSS (`VmHWM`: Linux carries `ru_maxrss` over exec, so a
   child would report the benchmark process's own peak).
2. **Callback**: the callback handler loaded once (warm: three callbacks first), then one
   callback per fresh state (a real connect session in the table), timed with `perf_counter`
   and `thread_time`. AWS calls are counted with botocore `before-call` hooks; HTTP calls by
   the fake Apicbase. The minimum the flow needs: one state delete, one token request, one
   introspection (the username is recorded), one KMS Encrypt, one connection write. The same
   calls are also made bare (plain botocore clients, one requests.Session), interleaved with
   the callbacks, to tell the SDK's and HTTP stack's CPU from the broker's.
3. **Refresh throughput**: N due connections seeded with real KMS ciphertexts of token pairs
   the fake Apicbase knows (it rotates refresh tokens: a lost rotation shows as invalid_grant).
   The scheduler handler and C worker threads start together; each worker thread is one
   Lambda container (its own module instance and clients) that receives up to 10 messages,
   runs the worker handler on them and deletes what it did not report as failed. Wall time
   from the scheduler's start to the last refresh stored, against the ideal N x latency / C.
   moto's server handles every AWS call in one Python process on the same 2 cores, so its CPU
   time during the run is read from /proc (with `--floor` the run is also repeated with a 0 ms
   token endpoint), and the time the workers spent inside AWS calls (the handlers' calls and
   the poller's deletes) is subtracted, divided by C, for the "less the emulator" figure, an
   optimistic bound. The same pipeline then runs with every AWS call answered by an in-memory
   AWS (`bench/fakeaws.py`, a botocore `before-call` handler: DynamoDB's condition, update and
   key expressions evaluated on dict items, KMS with the encryption context checked, SQS with
   long polling), with 0 ms and with a simulated latency per call (slept, no CPU, as a network
   round trip), the refresh logic unchanged: the broker's own pipeline without the emulator.
   moto's in-process backend (`mock_aws`) was measured for this and rejected: ~65 ms of this
   process's CPU per refresh, most of it evaluating the two UpdateItems. After every run a Scan
   and the fake Apicbase check that each connection was refreshed exactly once and that the
   refresh tokens Apicbase holds live are exactly the ones stored (decrypted). The moto's-server
   run measures fewer refreshes than N to keep the run short; it is bound by the emulator's CPU
   per refresh, which grows with the table (120 ms per refresh at N = 2,000 in an earlier run,
   efficiency 0.04), so its efficiency at N is no better than at the smaller size. The naive
   baseline
   refreshes one connection at a time through the same `refresh_connection`, with a new HTTP
   connection and a forced secret read each time; it is measured on a subset and
   extrapolated per refresh.
4. **Cost per refresh**: the calls of the throughput run divided by N. Secrets Manager: the
   C containers share one process here, so one read stands for one per container on Lambda.
   The Query figure seeds a table (moto in process) and runs the scheduler handler; the items
   read are the Query responses' `ScannedCount` (with `ReturnConsumedCapacity` added by a hook).
5. **Memory**: the peak RSS of figure 1's processes, after import and the first invocation.
"""

DECISIONS = """
## Decisions

**Tracer: not used.** Powertools' Tracer costs {tracer} of CPU on every cold start (importing
aws_xray_sdk and patching boto3 and requests), while everything a handler imports beyond
`boto3, requests` costs {ours} (median over the functions). Lambda's active tracing
(`Tracing: Active` in the template) already records every invocation and its Init phase with
no import at all. Tracer would add a subsegment per boto3 and HTTP call; the call counts and
timings here, the logs (with the correlation id) and the metrics answer the same questions.
Revisit only if a production latency question needs per-call subsegments.

**MemorySize.** Peak RSS after import and one invocation is {rss_low:.0f}-{rss_high:.0f} MB, so
memory itself never decides: 128 MB would hold every function. Lambda gives CPU in proportion
to memory (1,769 MB = one vCPU), and both the cold start and the warm path are CPU-bound
(imports, client construction, botocore's per-call work), so memory buys latency:
- CallbackFunction {size_CallbackFunction} MB: a person waits on it right after Apicbase's consent
  page; it runs once per connect, so the larger size costs next to nothing.
- ConnectionsFunction {size_ConnectionsFunction} MB: integrators' backends wait on it for tokens; a
  warm token read is one GetItem and one KMS Decrypt, so the size mostly shortens cold starts.
- RefreshWorkerFunction {size_RefreshWorkerFunction} MB: it mostly waits on Apicbase and KMS; half a
  vCPU keeps our CPU per refresh well under Apicbase's latency, and the reserved concurrency
  bounds the bill.
- RefreshSchedulerFunction {size_RefreshSchedulerFunction} MB: once an hour, one Query and a few
  SendMessageBatch calls; nobody waits on it.
"""

REPRODUCE = """
## How to reproduce

```
make bench                                # or: .venv/bin/python -m bench
.venv/bin/python -m bench --quick            # a smoke run, under a minute; prints the table only
.venv/bin/python -m bench --refreshes 500    # a shorter figure 3 (N = 2,000 dominates the run time)
.venv/bin/python -m bench --floor            # also figure 3 with a 0 ms token endpoint
```

It starts moto's server and the fake Apicbase (`bench/stub.py`) on 127.0.0.1 free ports, needs
no AWS account and no network, and rewrites this file. Run it on a quiet machine.
"""
