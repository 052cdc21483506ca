"""The table and docs/BENCHMARKS.md, from the figures of one run."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import harness as h
from .callback import EXTRA_REASONS, MINIMUM
from .coldstart import BASELINE, CALLBACK, SOURCE, TRACER, ImportProfile, Samples
from .costs import QueryFigures, RefreshCosts
from .harness import Warm, median

COLD_RATIO_TARGET = 1.2  # the callback's cold import against `import boto3, requests`
CALLBACK_CPU_TARGET_MS = 10.0
PROFILE_ROWS = 12
Row = tuple[str, str, str, str]  # figure, measured, target, met


@dataclass
class Results:
    sizes: Any
    command: str
    query: QueryFigures | None = None
    cold: dict[str, Samples] | None = None
    profile: ImportProfile | None = None
    callback: Warm | None = None
    callback_connections: int = 0  # new TCP connections to Apicbase in all the callbacks
    token: Warm | None = None
    refresh: RefreshCosts | None = None
    proxy: str | None = None  # bench.proxy's report: the proxy route's overhead per call
    seconds: float = 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def ratios(cold: dict[str, Samples], variant: str, key: str = "import_cpu", base: str = BASELINE) -> list[float]:
    """Per-round ratios, each against the baseline of the same round."""
    return [run[key] / b[key] for run, b in zip(cold[variant].runs, cold[base].runs, strict=True)]


def ratio(cold: dict[str, Samples], variant: str, key: str = "import_cpu", base: str = BASELINE) -> float:
    return median(ratios(cold, variant, key, base))


def paired_extra(cold: dict[str, Samples], variant: str, key: str = "import_cpu") -> float:
    """The median of per-round differences, each against the baseline of the same round."""
    return median([run[key] - b[key] for run, b in zip(cold[variant].runs, cold[BASELINE].runs, strict=True)])


def functions(cold: dict[str, Samples]) -> list[str]:
    return [v for v in cold if v not in (BASELINE, TRACER) and not v.endswith(SOURCE)]


def memory_sizes() -> dict[str, int]:
    template = h.tpl.load()
    default = int(template["Globals"]["Function"].get("MemorySize", 128))
    return {k: int(f.properties.get("MemorySize", default)) for k, f in h.tpl.functions(template).items()}


class _Rows(list[Row]):
    def add(self, figure: str, measured: str, target: str = "", ok: bool | None = None, met: str = "") -> None:
        self.append((figure, measured, target, met if ok is None else _verdict(ok)))


def _cold_rows(out: _Rows, cold: dict[str, Samples], profile: ImportProfile | None) -> None:
    def cpu(v: str) -> str:
        return _ms(cold[v].median("import_cpu"))

    out.add(
        "1. baseline `import boto3, requests`", f"{cpu(BASELINE)} CPU, {_ms(cold[BASELINE].median('import_wall'))} wall"
    )
    for fn in functions(cold):
        r, spread, wall = ratio(cold, fn), ratios(cold, fn), f"{_ms(cold[fn].median('import_wall'))} wall"
        measured = (
            f"{cpu(fn)} CPU, {wall}; **x{r:.2f}** CPU (rounds x{min(spread):.2f}-x{max(spread):.2f}), "
            f"x{ratio(cold, fn, 'import_wall'):.2f} wall"
        )
        if fn == CALLBACK:
            out.add(f"1. cold import {fn}", measured, f"x{COLD_RATIO_TARGET} of baseline", r <= COLD_RATIO_TARGET)
        else:
            out.add(f"1. cold import {fn}", measured)
    if profile:
        top = ", ".join(f"{p} {us / 1000:.0f} ms" for p, us in list(profile.packages.items())[:4])
        classes = f"creating our {profile.dataclass_count} dataclasses {_ms(profile.dataclasses)} CPU"
        out.add("1. callback import beyond the baseline (-X importtime)", f"{top}; {classes}", "see below")
    src = CALLBACK + SOURCE
    over = cold[src].median("import_cpu") - cold[CALLBACK].median("import_cpu")
    out.add(
        "1. the same, the layer compiled at import (as `sam build` ships it)",
        f"baseline {cpu(BASELINE + SOURCE)}, callback {cpu(src)} CPU: "
        f"x{ratio(cold, src, base=BASELINE + SOURCE):.2f}; callback +{_ms(over)} over .pyc",
    )
    tracer = paired_extra(cold, TRACER)
    out.add(
        "1. Powertools Tracer (imports aws_xray_sdk)",
        f"+{_ms(tracer)} CPU (x{ratio(cold, TRACER):.2f})",
        "decide",
        met="not used",
    )
    for fn in functions(cold):
        out.add(
            f"1. first invocation {fn}",
            f"{_ms(cold[fn].median('invoke_wall'))} wall, {_ms(cold[fn].median('invoke_cpu'))} CPU",
        )


def rows(results: Results) -> list[Row]:
    out, cold = _Rows(), results.cold
    if cold:
        _cold_rows(out, cold, results.profile)
    if cb := results.callback:
        cpu = median(cb.cpu)
        extra = sorted(k for k, n in cb.calls.items() if n > MINIMUM.get(k, 0))
        beyond = ", ".join(f"{s}:{o}" for s, o in extra) or "none"
        out.add("2. warm callback, wall", _ms(median(cb.wall)))
        out.add(
            "2. warm callback, our CPU",
            _ms(cpu),
            f"<= {CALLBACK_CPU_TARGET_MS:g} ms",
            cpu * 1000 <= CALLBACK_CPU_TARGET_MS,
        )
        out.add(
            "2. calls per callback",
            f"{sum(cb.calls.values()):g} ({beyond} beyond the minimum)",
            f"minimum {sum(MINIMUM.values())}",
            met="see below" if extra else "at the minimum",
        )
    if tk := results.token:
        per = h.by_kind(tk.calls, tk.count)
        kms, reads = per.get("kms", 0.0), per.get("dynamodb_read", 0.0)
        out.add("3. **KMS calls per warm GET /connections/{id}/token**", f"{kms:.2f}", "0 (a data-key cache)", kms == 0)
        out.add(
            "3. DynamoDB reads per warm GET token",
            f"{reads:.2f} (writes {per.get('dynamodb_write', 0):.2f})",
            "<= 1",
            reads <= 1,
        )
        out.add("3. warm GET token, our CPU and wall", f"{_ms(median(tk.cpu))} CPU, {_ms(median(tk.wall))} wall")
    if rf := results.refresh:
        per = h.by_kind(rf.calls, rf.n)
        writes, kms, secrets = per.get("dynamodb_write", 0), per.get("kms", 0), per.get("secretsmanager", 0) * rf.n
        out.add(
            "3. DynamoDB writes per refresh",
            f"{writes:.2f} (reads {per.get('dynamodb_read', 0):.2f})",
            "<= 2",
            writes <= 2,
        )
        out.add("3. KMS calls per refresh", f"{kms:.2f}", "<= 2", kms <= 2)
        out.add(
            "3. Secrets Manager reads per worker container", f"{secrets:g} in {rf.n} refreshes", "<= 1", secrets <= 1
        )
        out.add("3. our CPU per refresh (one container)", _ms(rf.cpu / rf.n))
        out.add(
            f"3. {rf.n} refreshes checked",
            f"refreshed exactly once {rf.refreshed}/{rf.n}, token requests {rf.token_requests}, failed "
            f"{rf.failed}, invalid_grant {rf.invalid_grants}",
            "each once",
            rf.refreshed == rf.n == rf.token_requests and rf.invalid_grants == 0,
        )
    if q := results.query:
        read = f"{q.scanned} items read ({q.pages} page(s), {q.capacity_units:g} RCU reported), {q.queued} queued"
        out.add(
            f"3. scheduler Query, {q.total:,} connections, {q.due} due", read, "~ due items", q.scanned <= q.due * 1.1
        )
    if cold:
        sizes, base_mb = memory_sizes(), cold[BASELINE].median("maxrss_mb")
        for fn in functions(cold):
            mb = cold[fn].median("maxrss_mb")
            out.add(
                f"4. peak RSS {fn}",
                f"{mb:.0f} MB (baseline {base_mb:.0f} MB)",
                f"MemorySize {sizes[fn]} MB",
                mb * 1.5 <= sizes[fn],
            )
    return out


def table(results: Results) -> str:
    lines = ["| Figure | Measured (median) | Target | Met |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)])


def _profile_section(p: ImportProfile) -> str:
    lines = [
        f"\n### The callback's import beyond the baseline\n\n`python -X importtime`, median of {p.rounds} rounds, "
        "with .pyc; a module counts only if the baseline does not import it (see Method). importtime's own "
        "overhead inflates every figure; their proportions hold.\n",
        "| Module | Imported by | Extra cumulative (us) | Self (us) |",
        "|---|---|---|---|",
        *(f"| `{n}` | `{parent}` | {c:,.0f} | {s:,.0f} |" for n, parent, c, s in p.subtrees[:PROFILE_ROWS]),
        "\nBy package (self time): " + ", ".join(f"`{name}` {us:,.0f} us" for name, us in p.packages.items()) + ".",
        f"Creating our package's {p.dataclass_count} dataclasses: {_ms(p.dataclasses)} of CPU (timed without "
        f"importtime). app.py's own code (its module body, outside every import; wall time): {_ms(p.body)}.",
    ]
    return "\n".join(lines)


def markdown(results: Results) -> str:
    parts = [
        f"Machine: {machine()}. Command: `{results.command}`, run time {results.seconds:.0f} s. "
        f"Sizes: {results.sizes}.\n",
        table(results),
    ]
    if results.profile:
        parts.append(_profile_section(results.profile))
    if cb := results.callback:
        connections = f"new TCP connections to Apicbase in all {cb.count + 3}: {results.callback_connections}"
        parts.append(f"\nCalls per warm callback: {h.describe_calls(cb.calls)}; {connections}.")
        parts += [
            f"Beyond the minimum, {s}:{o}: {EXTRA_REASONS.get((s, o), 'not explained by the benchmark')}."
            for (s, o), n in sorted(cb.calls.items())
            if n > MINIMUM.get((s, o), 0)
        ]
    if tk := results.token:
        calls = h.describe_calls(tk.calls, tk.count)
        parts.append(f"\nCalls per warm GET /connections/{{id}}/token ({tk.count} requests): {calls}.")
    if rf := results.refresh:
        calls = h.describe_calls(rf.calls)
        parts.append(f"\nCalls for {rf.n} refreshes (the scheduler and one worker container): {calls}.")
    if results.proxy:
        parts.append(f"\nThe proxy route (`python -m bench.proxy`):\n\n```\n{results.proxy}\n```")
    if q := results.query:
        parts.append(
            f"\nSeeding {q.total:,} items took {q.seed_seconds:.1f} s; the scheduler's run {q.query_seconds:.1f} s in "
            "moto (it evaluates the key condition over the whole index; DynamoDB reads only the matching range)."
        )
    return "\n".join([*parts, notes(results)])


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs (`nproc`), Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def notes(results: Results) -> str:
    """What holds each missed target back, in the run's own numbers."""
    out = ["\n## Where a target is missed, and why\n"]
    cold, profile, cb, tk = results.cold, results.profile, results.callback, results.token
    if cold and profile and ratio(cold, CALLBACK) > COLD_RATIO_TARGET:
        out.append(_cold_note(cold, profile))
    if cb and median(cb.cpu) * 1000 > CALLBACK_CPU_TARGET_MS:
        out.append(
            f"- **Callback CPU** ({_ms(median(cb.cpu))}). Most of it is botocore's and the HTTP stack's work "
            f"for the {sum(cb.calls.values()):g} calls (signing, serialising, parsing; see Retired). moto's server "
            "closes every connection, so each AWS call here also opens a TCP connection that botocore would "
            "keep alive on AWS."
        )
    if tk and h.by_kind(tk.calls, tk.count).get("kms", 0) > 0:
        out.append(
            "- **KMS per warm GET token** (one Decrypt per request). Every answer decrypts the stored pair with "
            "KMS; a data-key cache in the container (another issue) brings this to 0 for a warm container."
        )
    if len(out) == 1:
        out.append("Every target is met in this run.")
    return "\n".join(out)


def _cold_note(cold: dict[str, Samples], p: ImportProfile) -> str:
    base = cold[BASELINE].median("import_cpu")
    return (
        f"- **Callback cold import** (x{ratio(cold, CALLBACK):.2f} CPU, target x{COLD_RATIO_TARGET}): it adds "
        f"{_ms(paired_extra(cold, CALLBACK))} to the baseline's {_ms(base)}, where "
        f"x{COLD_RATIO_TARGET} allows {_ms(base * (COLD_RATIO_TARGET - 1))}. Powertools' resolver is gone from "
        f"it; what is left is in the profile above (creating our dataclasses {_ms(p.dataclasses)}, app.py's own "
        f'code {_ms(p.body)}), and what would have to change in the layer under "The callback\'s cold import".'
    )


BEGIN, END = "<!-- bench: figures begin -->", "<!-- bench: figures end -->"


def write(path: Path, results: Results) -> None:
    """Replace the figures between the markers; the prose around them is kept as it is."""
    text = path.read_text() if path.exists() else ""
    if BEGIN not in text or END not in text:  # a new file: the figures alone
        text = f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{markdown(results)}\n{END}{rest.split(END, 1)[1]}")
