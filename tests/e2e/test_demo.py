"""``python -m local.demo``, the README's second command, as a person runs it."""

from __future__ import annotations

import pytest

from tests.e2e.localrun import run_briefly, run_env

pytestmark = pytest.mark.e2e

STEPS = 12  # the stack, then eleven steps of the flow (the last: no AWS call refused by IAM)


def test_the_demo_walks_the_whole_flow_and_exits_0() -> None:
    # When the demo runs
    result = run_briefly(run_env(), "-m", "local.demo", timeout=180)

    # Then every step passed, each on one line, and no token field was printed
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in lines if line.startswith("✓")] == lines[:STEPS]
    assert lines[STEPS].startswith("demo passed")
    assert "access_token" not in result.stdout + result.stderr
