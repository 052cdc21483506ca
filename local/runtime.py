"""python -m local.runtime TEMPLATE LOGICAL_ID: one Lambda container of a function of the template.

Loads the SDK, then reads its setup (the first line on stdin, ``{"environment": {...}, "iam":
{...}}``: the pool may not know it yet when the process starts): the function's environment, and
its role (local/iam.py), enforced on every AWS call from then on. Imports the handler once: module
state stays warm between events, as in a Lambda container. Answers ``{"ready": true}``, or
``{"error", "message"}`` and exits 1 if the import failed. Then one event at a time: an event is
one JSON line on stdin, its answer one JSON line, ``{"result": ...}`` or ``{"error": "<type>"}``;
each AWS call the role refused is reported at once, ``{"refused": "<description>"}``, before the
answer. The handler's own output goes to stderr, so that nothing it prints can be taken for an
answer. Exits 0 at the end of stdin.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

from local import iam
from local import template as tpl
from local.lambda_context import LambdaContext

LAYER_PATH = tpl.LAYER_PATH


def limits(template: dict[str, Any], fn: tpl.Function) -> tuple[int, int]:
    """The function's timeout (seconds) and memory (MB), Globals included."""
    globals_ = template.get("Globals", {}).get("Function", {})
    timeout = int(fn.properties.get("Timeout", globals_.get("Timeout", 3)))
    return timeout, int(fn.properties.get("MemorySize", globals_.get("MemorySize", 128)))


_SENDING = threading.Lock()  # a handler's threads may report refusals while it answers


def _send(out: IO[str], line: str) -> None:
    with _SENDING:
        out.write(line + "\n")
        out.flush()


def main(argv: list[str]) -> int:
    template_path, logical_id = argv
    # Ctrl-C reaches the whole process group; the pool decides when a container stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    import boto3  # noqa: F401, PLC0415 (the Lambda runtime's own SDK, loaded while the environment is awaited)

    setup_line = sys.stdin.readline()
    if not setup_line:
        return 0
    setup = json.loads(setup_line)
    os.environ.update(setup["environment"])
    if setup.get("iam"):
        enforcer = iam.enforcer_from_setup(
            setup["iam"], lambda refusal: _send(answers, json.dumps({"refused": refusal.describe()}))
        )
        iam.enforce_in_every_session(enforcer)
    sys.path.insert(0, str(LAYER_PATH))  # what the layer puts on Lambda's path
    try:
        template = tpl.load(Path(template_path))
        fn = tpl.functions(template)[logical_id]
        timeout, memory = limits(template, fn)
        handler = getattr(fn.import_module(f"local_lambda_{logical_id}"), fn.handler_name)
    except Exception as exc:  # e.g. the layer's ConfigurationError, which says what to set
        message = getattr(exc, "message", None)
        message = message if isinstance(message, str) else None
        _send(answers, json.dumps({"error": type(exc).__name__, "message": message}))
        return 1
    _send(answers, json.dumps({"ready": True}))
    for line in sys.stdin:
        try:
            result = handler(json.loads(line), LambdaContext(logical_id, memory, timeout))
            reply = json.dumps({"result": result})
        except Exception as exc:  # the type only: an exception's text could carry request data
            reply = json.dumps({"error": type(exc).__name__})
        _send(answers, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
