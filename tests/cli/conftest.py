"""The CLI against the admin API's real handler, served on 127.0.0.1 by tests/cli/apigw.py
(moto for AWS, the fake Apicbase for Apicbase)."""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from apicbase_broker_cli import target
from apicbase_broker_cli.main import main
from tests.cli import apigw
from tests.cli.deployed import STACK
from tests.cli.deployed import stack as stack_in_moto
from tests.e2e.conftest import local_run, webhook  # noqa: F401 (the e2e suite's local run, for test_local_run.py)


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def broker(aws, apicbase, template, load_handler, lambda_context, monkeypatch) -> Iterator[apigw.Served]:
    """The admin API and the callback, served on 127.0.0.1."""
    monkeypatch.delenv("APICBASE_BROKER_API_URL", raising=False)
    handlers = {name: load_handler(name) for name in ("ConnectionsFunction", "CallbackFunction")}
    with apigw.serve(template, handlers, lambda_context) as served:
        # The CLI speaks requests, which the fake Apicbase's mock would answer instead.
        apicbase.mock.add_passthru(served.url)
        yield served


def runner(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *, naming: str = "--api-url"
) -> Callable[..., Run]:
    """``apicbase-broker <naming> <url> ARGS`` in-process (``naming``: how the broker is found)."""

    def run(*args: str, stdin: str = "") -> Run:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([naming, url, *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli(broker, capsys, monkeypatch) -> Callable[..., Run]:
    """Run ``apicbase-broker --api-url <local> ARGS`` in-process, with ``stdin`` piped."""
    return runner(broker.url, capsys, monkeypatch)


@pytest.fixture
def offline_cli(capsys, monkeypatch) -> Callable[..., Run]:
    """The same, pointed at a port where nothing listens (for what fails before any answer)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return runner(f"http://127.0.0.1:{port}", capsys, monkeypatch)


@pytest.fixture
def deployed(aws, broker, template) -> target.Target:
    """A deployed stack in moto with the admin API on 127.0.0.1 (tests/cli/deployed.py)."""
    return stack_in_moto(aws, template, broker.url)


@pytest.fixture
def on_stack(deployed, capsys, monkeypatch) -> Callable[..., Run]:
    """Run ``apicbase-broker --stack-name <deployed> ARGS`` in-process, with ``stdin`` piped;
    only CloudFormation's answer is replaced (tests/deploy/test_rehearsal.py asks moto's)."""
    monkeypatch.setattr(target, "from_stack", lambda name, **_: deployed if name == STACK else None)
    return runner(STACK, capsys, monkeypatch, naming="--stack-name")
