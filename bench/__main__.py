"""Run every benchmark, print the table and write docs/BENCHMARKS.md.

python -m bench            # the full run (a few minutes on a quiet machine)
python -m bench --quick    # a smoke run with small sizes (under a minute)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from . import callback, coldstart, query, refresh, report
from . import harness as h


@dataclass(frozen=True)
class Sizes:
    rounds: int  # cold starts per function
    callbacks: int
    refreshes: int
    server_refreshes: int  # figure 3 on moto's server, bound by its CPU: fewer, same efficiency
    concurrency: int
    latency_ms: float
    aws_latency_ms: float  # the in-memory AWS's simulated latency per call, besides 0 ms
    naive_refreshes: int
    table_items: int
    due_items: int


FULL = Sizes(
    rounds=5,
    callbacks=60,
    refreshes=2000,
    server_refreshes=500,
    concurrency=10,
    latency_ms=50,
    aws_latency_ms=5,
    naive_refreshes=200,
    table_items=100_000,
    due_items=100,
)
QUICK = replace(
    FULL, rounds=1, callbacks=10, refreshes=100, server_refreshes=100, naive_refreshes=10, table_items=5_000
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=h.ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument(
        "--refreshes", type=int, help="N for figure 3 (moto's server at most N/4, the naive baseline N/10)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="repeat figure 3 with a 0 ms token endpoint (moto's own CPU is measured either way)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.refreshes:  # a smaller N when the machine is too busy for the full run
        sizes = replace(
            sizes,
            refreshes=args.refreshes,
            server_refreshes=min(sizes.server_refreshes, max(args.refreshes // 4, 1)),
            naive_refreshes=max(args.refreshes // 10, 1),
        )
    # Stopped with SIGTERM, the servers this run started are stopped too (as on Ctrl-C).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The scheduler flushes Metrics with nothing in them when no connection is due.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    started = time.perf_counter()
    counter = h.CallCounter()
    counter.install()
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    results = report.Results(sizes=sizes, quick=args.quick, command=command)

    def step(name: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {name}", file=sys.stderr, flush=True)

    with h.moto_server() as emulator, h.apicbase_stub() as stub:
        step("4b. the scheduler's Query on a big table (moto in process)")
        results.query = query.run(stub, counter, total=sizes.table_items, due=sizes.due_items)
        step("1, 5. cold starts and peak memory")
        stack = h.Stack.provision(emulator.url, stub, "bench-cold")
        results.cold = coldstart.run(stack, sizes.rounds)
        step("2. warm callbacks")
        results.callback = callback.run(stack, counter, sizes.callbacks)
        refresh_stack = h.Stack.provision(emulator.url, stub, "bench-refresh")
        common = {"n": sizes.server_refreshes, "concurrency": sizes.concurrency, "emulator": emulator}
        step(f"3. refresh pipeline on moto's server, {sizes.latency_ms:g} ms token endpoint")
        results.pipeline = refresh.pipeline(refresh_stack, counter, latency_ms=sizes.latency_ms, **common)
        if args.floor:
            step("3. refresh pipeline, 0 ms token endpoint (the emulator's floor)")
            results.pipeline_floor = refresh.pipeline(refresh_stack, counter, latency_ms=0, **common)
        for aws_latency_ms in (0, sizes.aws_latency_ms):
            step(f"3. refresh pipeline on the in-memory AWS, {aws_latency_ms:g} ms per AWS call")
            figures = refresh.pipeline_in_memory(
                refresh_stack,
                counter,
                n=sizes.refreshes,
                concurrency=sizes.concurrency,
                latency_ms=sizes.latency_ms,
                aws_latency_ms=aws_latency_ms,
            )
            results.pipeline_memory.append(figures)
        step("3. naive sequential refresher")
        results.naive = refresh.naive(refresh_stack, counter, n=sizes.naive_refreshes, latency_ms=sizes.latency_ms)
    results.seconds = time.perf_counter() - started
    step("done")
    print(report.table(results))
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report.markdown(results))
        print(f"\nwrote {args.output.relative_to(h.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
