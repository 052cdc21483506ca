"""One cold start in a fresh interpreter: the import (a handler module or a baseline), then
optionally one invocation, then the peak resident memory. Writes its figures as JSON.

    python -m bench.child SPEC_JSON RESULT_PATH

SPEC: {"kind": "handler", "module_path": ..., "event": ..., "function": ..., "timeout": s, "dataclasses": bool}
   or {"kind": "baseline"} (import boto3, requests)
   or {"kind": "tracer"} (the baseline, then Powertools' Tracer, which imports aws_xray_sdk).
Nothing of the benchmark is imported before the measured import, so nothing warms it.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "bench: the measured import starts"


def _import(spec: dict) -> object:
    if spec["kind"] == "handler":
        module_spec = importlib.util.spec_from_file_location("app", spec["module_path"])
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["app"] = module
        module_spec.loader.exec_module(module)
        return module
    import boto3  # noqa: F401, PLC0415 (the import is what is measured)
    import requests  # noqa: F401, PLC0415

    if spec["kind"] == "tracer":
        from aws_lambda_powertools import Tracer  # noqa: PLC0415

        Tracer()
    return None


def _time_dataclasses(result: dict) -> None:
    """Sum the time spent creating our package's dataclasses (each execs its generated methods)."""
    import dataclasses  # noqa: PLC0415 (the baseline imports it too)

    original = dataclasses._process_class  # type: ignore[attr-defined]
    result.update(dataclasses_cpu=0.0, dataclasses=0)

    def timed(cls: type, *args: object, **kwargs: object) -> object:
        started = time.process_time()
        try:
            return original(cls, *args, **kwargs)
        finally:
            if cls.__module__.startswith("apicbase_oauth"):
                result["dataclasses_cpu"] += time.process_time() - started
                result["dataclasses"] += 1

    dataclasses._process_class = timed  # type: ignore[attr-defined]


def _peak_rss_mb() -> float:
    """VmHWM, the peak RSS since exec (Linux carries ru_maxrss over exec: it would be the parent's)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def main() -> None:
    spec, result = json.loads(sys.argv[1]), {}
    if spec.get("dataclasses"):
        _time_dataclasses(result)
    print(MARK, file=sys.stderr, flush=True)  # under -X importtime: what follows is the measured import
    wall, cpu = time.perf_counter(), time.process_time()
    module = _import(spec)
    result.update(import_wall=time.perf_counter() - wall, import_cpu=time.process_time() - cpu)
    if module is not None and spec.get("event") is not None:
        sys.path.append(str(ROOT))  # after the measured import: nothing of local/ warms it
        from local.lambda_context import LambdaContext  # noqa: PLC0415

        wall, cpu = time.perf_counter(), time.process_time()
        answer = module.lambda_handler(spec["event"], LambdaContext(spec["function"], timeout_seconds=spec["timeout"]))
        result.update(invoke_wall=time.perf_counter() - wall, invoke_cpu=time.process_time() - cpu)
        result["answer"] = answer.get("statusCode", answer) if isinstance(answer, dict) else str(answer)
    result["maxrss_mb"] = _peak_rss_mb()
    with open(sys.argv[2], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
