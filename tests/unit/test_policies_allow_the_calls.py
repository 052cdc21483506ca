"""The roles allow what the code does. moto does not enforce IAM, so a condition that refused a
real call (a key prefix, an encryption context) would pass every other test and fail in AWS:
here each function runs its flows through its real handler on moto, every AWS call is recorded
as IAM sees it (action, resource, key, encryption context, event source), and each call is
evaluated against that function's own policy statements from template.yaml."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
from local import template as tpl

from apicbase_oauth import deps as deps_module
from apicbase_oauth import proxy
from apicbase_oauth.adapters.queue import encode
from apicbase_oauth.config import Settings
from apicbase_oauth.model import Grant, Rescue, TokenPair
from tests.binding import start_id_of, state_of
from tests.conftest import REGION, load_event
from tests.unit import iam
from tests.unit.refresh_support import seed

CID = "lib-42"


@pytest.fixture
def run(load_handler, aws, template, clock, lambda_context) -> Callable[[str, dict[str, Any]], Any]:
    """Invoke a function's real handler with its own environment and a recorder on every AWS
    client it builds (the secrets provider's included); the calls pile up per function."""
    recorded: dict[str, iam.Recorder] = {}

    def invoke(logical_id: str, event: dict[str, Any]) -> Any:
        recorder = recorded.setdefault(logical_id, iam.Recorder(aws.refs))
        session = boto3.session.Session(region_name=REGION)
        session.events.register("before-call", recorder._before)
        module = load_handler(logical_id)
        module.DEPS = deps_module.build(Settings.from_env(aws.env(template, logical_id)), session=session, now=clock)
        module.DEPS.sleep = clock.sleep
        if hasattr(module, "PROXY"):
            module.PROXY = proxy.build(module.DEPS)
        DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider(boto3_session=session)
        return module.lambda_handler(event, lambda_context)

    invoke.recorded = recorded  # type: ignore[attr-defined]
    return invoke


def _admin_event(name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    event = load_event(name)
    if body is not None:
        event.update(body=json.dumps(body), isBase64Encoded=False)
    return event


def _flows(run, deps, apicbase, data_api, clock) -> dict[str, iam.Recorder]:
    """Every function through the paths that call AWS: connect (session, callback), the admin
    routes (the Apicbase proxy and its request budget included), a due refresh queued by the
    scheduler and done by the worker."""
    started = run("ConnectionsFunction", _admin_event("admin_create_connect_session.json"))
    opened = load_event("callback.json")
    opened.update(routeKey="GET /oauth/start", rawPath="/oauth/start")
    opened["queryStringParameters"] = {"session": start_id_of(json.loads(started["body"])["connect_url"])}
    redirected = run("CallbackFunction", opened)
    callback = load_event("callback.json")
    callback["queryStringParameters"] = {
        "code": apicbase.issue_code(),
        "state": state_of(redirected["headers"]["Location"]),
    }
    callback["cookies"] = [redirected["cookies"][0].split(";")[0]]
    assert run("CallbackFunction", callback)["statusCode"] in {200, 302}

    seed(deps, apicbase, CID, expires_in=60)
    for name, body in [
        ("admin_get_token.json", None),
        ("admin_refresh.json", None),
        ("admin_get_connection.json", None),
        ("admin_proxy_apicbase.json", None),
        ("admin_list_connections.json", None),
        ("admin_import_tokens.json", None),
        ("admin_exchange_code.json", {"code": apicbase.issue_code()}),
        ("admin_delete_connection.json", None),
    ]:
        response = run("ConnectionsFunction", _admin_event(name, body))
        assert response["statusCode"] < 300, (name, response["body"])

    seed(deps, apicbase, CID, expires_in=60)
    run("RefreshSchedulerFunction", load_event("scheduled_tick.json"))
    before = apicbase.refresh_requests
    assert run("RefreshWorkerFunction", load_event("sqs_refresh_batch.json"))["batchItemFailures"] == []
    assert apicbase.refresh_requests == before + 1

    # A parked pair (custody's rescue place), swept by the scheduler and applied by the worker.
    connection = deps.connections.get(CID)
    grant = Grant(
        connection_id=CID,
        application="default",
        client_id=connection.client_id,
        tokens=b"",
        expires_at=int(clock()) + 3600,
        scope=None,
        username=None,
        source="callback",
    )
    parked = Rescue.of_grant(grant, parked_at=int(deps.now()))
    sealed = deps.cipher.encrypt(CID, TokenPair(*apicbase.issue_pair()))
    deps.connections.park(dataclasses.replace(parked, tokens=sealed, parked_at=int(clock()) + 1))
    clock.advance(2)
    sweep = load_event("sqs_refresh_batch.json")
    sweep["Records"] = sweep["Records"][:1]
    sweep["Records"][0]["body"] = encode(CID, int(clock()), sweep=True)
    assert run("RefreshWorkerFunction", sweep)["batchItemFailures"] == []
    assert deps.connections.parked(CID) is None
    return run.recorded


@pytest.fixture
def recorded(run, deps, apicbase, data_api, clock) -> dict[str, iam.Recorder]:
    return _flows(run, deps, apicbase, data_api, clock)


def test_every_aws_call_of_every_function_is_allowed_by_its_own_role(recorded, template, aws) -> None:
    """Given each function's recorded AWS calls in its real flows,
    when each is evaluated against that function's policy statements (conditions included),
    then every call is allowed, and each function made calls (the check is not vacuous)."""
    refused = [
        f"{name}: {call}"
        for name, recorder in recorded.items()
        for call in recorder.calls
        if not iam.allowed(template, name, call, aws.refs)
    ]
    assert refused == []
    counts = {name: len(recorder.calls) for name, recorder in recorded.items()}
    assert set(counts) == set(tpl.functions(template))
    assert all(counts.values()), counts


def test_the_recorded_calls_carry_the_conditions_the_policies_test(recorded) -> None:
    """Given the calls recorded, then the conditioned keys were really seen: state and connection
    keys, the encryption context with its purpose, the event source (so the test above evaluated
    the conditions rather than skipping them)."""
    contexts = [call.context for recorder in recorded.values() for call in recorder.calls]
    leading = {key.split("#")[0] for context in contexts for key in context.get("dynamodb:LeadingKeys", [])}
    purposes = {p for context in contexts for p in context.get("kms:EncryptionContext:purpose", [])}
    assert leading == {"STATE", "START", "CONN", "RESCUE", "BUDGET"}
    assert purposes == {"apicbase-oauth-tokens"}
    assert any("events:source" in context for context in contexts)
    callback_actions = {call.action for call in recorded["CallbackFunction"].calls}
    assert {"dynamodb:DeleteItem", "dynamodb:UpdateItem", "kms:GenerateDataKey", "secretsmanager:GetSecretValue"} <= (
        callback_actions
    )
