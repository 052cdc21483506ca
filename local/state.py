"""The local run's state file: how ``apicbase-broker doctor --local-run`` and ``set-credentials
--local-run`` find this run's emulated AWS (moto's endpoint), its outputs and its parameters, as
they find a deployed stack's through CloudFormation.

It holds no secret: moto's credentials are dummies, and the sandbox's client secret stays in the
processes' environment. Written (owner-only) once the run is ready, removed when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local import template as tpl

VARIABLE = "LOCAL_STATE_FILE"
DEFAULT_PATH = tpl.ROOT / ".local-data" / "local-run.json"


def path_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(VARIABLE, "").strip() or DEFAULT_PATH)


def outputs(template: dict[str, Any], refs: dict[str, str]) -> dict[str, str]:
    """The template's Outputs resolved against ``refs``, but those of what was not created (the
    HttpApi, locally)."""
    values: dict[str, str] = {}
    for name, spec in template.get("Outputs", {}).items():
        if "Condition" in spec and refs.get(f"Condition:{spec['Condition']}") != "true":
            continue
        with contextlib.suppress(KeyError):
            values[name] = str(tpl.resolve(spec["Value"], refs))
    return values


def describe(stack: Any) -> dict[str, Any]:
    """What the file says about a started ``local.stack.Stack``."""
    template, refs = stack.template, stack.refs
    return {
        "about": "written by python -m local.run while it runs; read by apicbase-broker --local-run",
        "pid": os.getpid(),
        "region": refs["AWS::Region"],
        "aws_endpoint_url": stack.moto_url,
        "outputs": {**outputs(template, refs), "ApiUrl": stack.url, "CallbackUrl": stack.callback_url},
        "parameters": {name: refs[name] for name in template.get("Parameters", {}) if name in refs},
        "resources": {
            name: [resource["Type"], refs[name]] for name, resource in template["Resources"].items() if name in refs
        },
        "schedule": {"every_seconds": stack.config.refresh_tick_seconds},
    }


def write(stack: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(describe(stack), handle, indent=2)
    os.replace(partial, path)


def remove(path: Path) -> None:
    """Remove the file if this process wrote it (another run may have replaced it since)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
