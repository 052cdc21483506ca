"""Which Python each make target needs: make test and make build stop at once, in one line, without
Python 3.13 (sam build targets the Lambda runtime); the venvs of make run take any 3.11+. A stub
interpreter that says it is 3.11 stands for a machine that has nothing newer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.localrun import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def only_python_3_11(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine whose only Python is 3.11 (scripts/find-python's candidates)."""
    stub = tmp_path / "python3"
    stub.write_text('#!/bin/sh\ncase "$2" in *print*) echo "$0 3.11" ;; esac\nexit 0\n')
    stub.chmod(0o755)
    # As a person's shell: not inside another make (make test), whose variables change make's output.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    return {**env, "FIND_PYTHON_CANDIDATES": str(stub)}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("target", ["test", "build"])
def test_without_python_3_13_make_test_stops_at_once_with_one_line_naming_it(only_python_3_11, target):
    # When make test (or build) starts on a machine with only Python 3.11 (dry run: should the
    # check ever fail to stop it, nothing runs)
    result = run(["make", "--dry-run", target], only_python_3_11)
    # Then it stops before doing anything, with one line that names 3.13 and what works instead
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"Python 3.13 is needed for make {target}" in lines[0]
    assert "make run" in lines[0]


def test_make_run_s_venv_takes_python_3_11(only_python_3_11):
    # When the venv's interpreter is chosen on that machine, Then 3.11 will do
    result = run(["scripts/find-python"], only_python_3_11)
    assert (result.returncode, result.stdout.strip()) == (0, only_python_3_11["FIND_PYTHON_CANDIDATES"])
    # And make run goes ahead
    assert run(["make", "--dry-run", "run"], only_python_3_11).returncode == 0
