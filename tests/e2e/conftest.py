"""The local stack as real processes (``python -m local.run``: moto, the sandbox, the adapter),
started once per session with a webhook for its connection events; tests use their own
connection ids so they do not interfere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.localrun import ARTIFACTS, LocalRun, running
from tests.e2e.webhook import API_KEY, WebhookReceiver


@pytest.fixture(autouse=True)
def no_aws_call_refused() -> Iterator[None]:
    """Every function's role is enforced in the local run (local/iam.py): a test during which a
    run logged a refused AWS call fails, with the calls, as the same call would fail on AWS."""
    before = {id(run): len(run.refusals()) for run in LocalRun.started}
    yield
    refused = [
        line
        for run in list(LocalRun.started)
        if not run.expects_refusals
        for line in run.refusals()[before.get(id(run), 0) :]
    ]
    assert refused == [], "AWS calls refused by the functions' roles:\n" + "\n".join(refused)


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def local_run(webhook: WebhookReceiver) -> Iterator[LocalRun]:
    ARTIFACTS.mkdir(exist_ok=True)
    with running(ARTIFACTS / "e2e-local-run.log", WEBHOOK_URL=webhook.url, WEBHOOK_API_KEY=API_KEY) as run:
        yield run
