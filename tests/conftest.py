"""Shared fixtures: fake AWS credentials, moto resources built from template.yaml, a fake
Apicbase, a controllable clock, a Lambda context, and the handlers loaded as Lambda would."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
import responses
from local import aws as local_aws
from local import template as tpl
from local.lambda_context import LambdaContext
from moto import mock_aws

from apicbase_oauth import deps as deps_module
from apicbase_oauth import observability
from apicbase_oauth.config import Settings
from tests import fakes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def shared_botocore_loader() -> Iterator[None]:
    """Every test builds fresh boto3 sessions (moto, handlers); one shared model loader spares
    re-reading botocore's JSON service models each time, the bulk of a fixture's setup cost."""
    loader = botocore.loaders.create_loader()
    original = botocore.session.Session._register_data_loader

    def register(self: botocore.session.Session) -> None:
        self._components.lazy_register_component("data_loader", lambda: loader)

    botocore.session.Session._register_data_loader = register  # type: ignore[method-assign]
    yield
    botocore.session.Session._register_data_loader = original  # type: ignore[method-assign]


EVENTS = ROOT / "events"
REGION = "eu-west-1"
CALLBACK_URL = "https://broker.example.com/oauth/callback"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and no endpoint override: unit tests never leave the process."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_METRICS_NAMESPACE": "ApicbaseOAuthBrokerTest",
        "POWERTOOLS_SERVICE_NAME": "apicbase-oauth-broker",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml, or the template TEMPLATE_FILE names (as the local run reads it)."""
    return tpl.load(Path(os.environ.get("TEMPLATE_FILE") or tpl.TEMPLATE_PATH))


class Clock:
    """Time that tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds

    sleep = advance


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class Aws:
    session: boto3.session.Session
    refs: dict[str, str]

    def env(self, template: dict[str, Any], logical_id: str) -> dict[str, str]:
        return local_aws.function_environment(template, logical_id, self.refs)

    @property
    def table(self) -> Any:
        return self.session.resource("dynamodb").Table(self.refs["ConnectionsTable"])


@pytest.fixture
def aws(template: dict[str, Any]) -> Iterator[Aws]:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        refs = local_aws.provision(
            session,
            template,
            applications=fakes.APPLICATIONS,
            parameters={
                "ApicbaseAuthorizeUrl": fakes.AUTHORIZE_URL,
                "ApicbaseTokenUrl": fakes.TOKEN_URL,
                "ApicbaseIntrospectUrl": fakes.INTROSPECT_URL,
                "ApicbaseRevokeUrl": fakes.REVOKE_URL,
                "CallbackUrlOverride": CALLBACK_URL,
            },
        )
        yield Aws(session=session, refs=refs)


@pytest.fixture
def settings(aws: Aws, template: dict[str, Any]) -> Settings:
    # The scheduler's environment is the widest (it adds the queue and the window).
    env = {**aws.env(template, "ConnectionsFunction"), **aws.env(template, "RefreshSchedulerFunction")}
    return Settings.from_env(env)


@pytest.fixture
def deps(aws: Aws, settings: Settings, clock: Clock) -> deps_module.Deps:
    built = deps_module.build(settings, session=aws.session, now=clock)
    built.sleep = clock.sleep
    return built


@pytest.fixture
def apicbase(clock: Clock) -> Iterator[fakes.FakeApicbase]:
    fake = fakes.FakeApicbase(now=clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.register(mock)
        yield fake
    # Under reuse protection a second presentation revokes the family: no code path may do it.
    assert fake.reuse_expected or fake.reuses == 0, f"{fake.reuses} revoked refresh token(s) presented again"


@pytest.fixture
def data_api(apicbase: fakes.FakeApicbase) -> fakes.DataApi:
    """Apicbase's data API (api.apicbase.com) on the same responses mock as the fake Apicbase."""
    api = fakes.DataApi(apicbase)
    for method in (responses.GET, responses.POST, responses.PUT, responses.PATCH, responses.DELETE, responses.HEAD):
        apicbase.mock.add_callback(
            method, responses.matchers.re.compile(r"https://api\.apicbase\.com/.*"), callback=api
        )
    return api


@pytest.fixture
def lambda_context() -> LambdaContext:
    # The admin API's and the worker's Timeout (the callback's is 30 s, which its exchange fits).
    return LambdaContext(timeout_seconds=60)


@pytest.fixture
def load_handler(aws: Aws, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import a function's handler module fresh, with the environment the template gives it,
    under a unique module name (every function's module is called ``app``)."""

    def load(logical_id: str) -> ModuleType:
        for name, value in aws.env(template, logical_id).items():
            monkeypatch.setenv(name, value)
        # A container reads the metrics namespace when it creates Metrics; the shared one was
        # created at the tests' first import, before this environment existed.
        monkeypatch.setattr(observability.metrics, "namespace", os.environ["POWERTOOLS_METRICS_NAMESPACE"])
        return tpl.functions(template)[logical_id].import_module(f"handler_{logical_id}_{uuid.uuid4().hex[:8]}")

    return load


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())
