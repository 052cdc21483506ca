"""The output of ``make build`` (``sam build``): reused while it is newer than every source, else
built afresh, so that tests and benchmarks look at what the current sources deploy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".aws-sam" / "build"


def _sources_mtime() -> float:
    # Links followed, as sam build follows them: each CodeUri's Makefile is scripts/lambda-build.mk,
    # and the layer's apicbase_broker is cli/'s.
    paths = [ROOT / "template.yaml"]
    for top in ("functions", "layers"):
        for folder, dirs, files in os.walk(ROOT / top, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            paths += [Path(folder, name) for name in files]
    return max(p.stat().st_mtime for p in paths)


def current_build(fresh_dir: Path) -> Path:
    """``make build``'s output when it is newer than every source; else a fresh ``sam build`` in ``fresh_dir``."""
    built = BUILD_DIR / "template.yaml"
    if built.exists() and built.stat().st_mtime >= _sources_mtime():
        return BUILD_DIR
    # The Makefile's own target (pinned SAM CLI, Python 3.13 on PATH), into a directory of ours.
    command = ["make", "--no-print-directory", "build", f"BUILD_DIR={fresh_dir}"]
    subprocess.run(command, cwd=ROOT, check=True, timeout=600)  # noqa: S603 (our own Makefile)
    return fresh_dir
