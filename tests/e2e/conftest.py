"""The local stack as real processes (``python -m local.run``: moto, the sandbox, the adapter),
started once per session; tests use their own connection ids so they do not interfere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.localrun import ARTIFACTS, LocalRun


@pytest.fixture(scope="session")
def local_run() -> Iterator[LocalRun]:
    ARTIFACTS.mkdir(exist_ok=True)
    run = LocalRun(ARTIFACTS / "e2e-local-run.log")
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()
