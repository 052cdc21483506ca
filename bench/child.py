"""One cold start, in a fresh interpreter: import (a handler module, or a baseline), then
optionally one invocation, then the peak resident memory. Writes its figures as JSON to the path given.

    python -m bench.child SPEC_JSON RESULT_PATH

SPEC: {"kind": "handler", "module_path": ..., "event": ..., "function": ...}
   or {"kind": "baseline"} (import boto3, requests)
   or {"kind": "tracer"} (the baseline, then Powertools' Tracer, which imports aws_xray_sdk)
   or {"kind": "powertools"} (the baseline, then the Powertools modules the handlers import).
Handler children do not import anything of the benchmark, so nothing warms their imports.
"""

import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import(spec: dict) -> object:
    if spec["kind"] == "handler":
        module_spec = importlib.util.spec_from_file_location("app", spec["module_path"])
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["app"] = module
        module_spec.loader.exec_module(module)
        return module
    # The imports are what is measured, so they happen here and nowhere earlier.
    import boto3  # noqa: F401, PLC0415
    import requests  # noqa: F401, PLC0415

    if spec["kind"] == "tracer":
        from aws_lambda_powertools import Tracer  # noqa: PLC0415

        Tracer()
    if spec["kind"] == "powertools":  # what the handlers import from Powertools, without our code
        import aws_lambda_powertools.event_handler  # noqa: PLC0415
        import aws_lambda_powertools.utilities.batch  # noqa: PLC0415
        import aws_lambda_powertools.utilities.parameters  # noqa: F401, PLC0415
    return None


def _peak_rss_mb() -> float:
    """VmHWM: the peak RSS since exec. ru_maxrss would do on Lambda, but Linux carries it
    over exec, so here it would report the (larger) benchmark process that forked us."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    spec = json.loads(sys.argv[1])
    wall, cpu = time.perf_counter(), time.process_time()
    module = _import(spec)
    result = {"import_wall": time.perf_counter() - wall, "import_cpu": time.process_time() - cpu}
    if module is not None and spec.get("event") is not None:
        sys.path.append(str(ROOT))  # after the measured import: nothing of local/ warms it
        from local.lambda_context import LambdaContext  # noqa: PLC0415

        wall, cpu = time.perf_counter(), time.process_time()
        answer = module.lambda_handler(spec["event"], LambdaContext(spec["function"]))
        result["invoke_wall"] = time.perf_counter() - wall
        result["invoke_cpu"] = time.process_time() - cpu
        result["answer"] = answer.get("statusCode", answer) if isinstance(answer, dict) else str(answer)
    result["maxrss_mb"] = _peak_rss_mb()
    with open(sys.argv[2], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
