"""Run every benchmark, print the table and write docs/BENCHMARKS.md.

python -m bench            # the full run (two to three minutes)
python -m bench --quick    # a smoke run with small sizes; prints the table only
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import callback, coldstart, costs, proxy, report
from . import harness as h


@dataclass(frozen=True)
class Sizes:
    rounds: int  # cold starts per variant
    callbacks: int
    refreshes: int
    token_gets: int
    table_items: int
    due_items: int
    proxy_calls: int


FULL = Sizes(rounds=9, callbacks=60, refreshes=100, token_gets=100, table_items=100_000, due_items=100, proxy_calls=300)
QUICK = replace(FULL, rounds=1, callbacks=10, refreshes=20, token_gets=20, table_items=5_000, proxy_calls=50)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--output", type=Path, help="where to write the report (default: docs/BENCHMARKS.md, full runs)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    output = args.output or (None if args.quick else h.ROOT / "docs" / "BENCHMARKS.md")
    # Stopped with SIGTERM, the servers this run started are stopped too (as on Ctrl-C).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    counter = h.CallCounter()
    counter.install()
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    results = report.Results(sizes=sizes, command=command)

    def step(name: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {name}", file=sys.stderr, flush=True)

    with h.moto_server() as emulator, h.apicbase_stub() as stub:
        step("3. the scheduler's Query on a big table (moto in process)")
        results.query = costs.scheduler_query(stub, counter, total=sizes.table_items, due=sizes.due_items)
        step("1, 4. cold starts, the callback's import profile, peak memory")
        stack = h.Stack.provision(emulator, stub, "bench-cold")
        results.cold, results.profile = coldstart.run(stack, sizes.rounds)
        step("2. warm callbacks")
        results.callback, results.callback_connections = callback.run(stack, counter, sizes.callbacks)
        results.callback_expecting = callback.expecting_user(stack, counter, sizes.callbacks)
        step("3. warm GET /connections/{id}/token")
        cost_stack = h.Stack.provision(emulator, stub, "bench-costs")
        results.token = costs.token_gets(cost_stack, counter, sizes.token_gets)
        step(f"3. {sizes.refreshes} refreshes, scheduler and one worker container")
        results.refresh = costs.refreshes(cost_stack, counter, sizes.refreshes)
    step("5. the proxy route's overhead per call (its own stub and moto)")
    results.proxy = proxy.measure(sizes.proxy_calls)
    results.seconds = time.perf_counter() - started
    step("done")
    print(report.table(results))
    print(proxy.report(results.proxy))
    if output:
        report.write(output, results)
        print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
