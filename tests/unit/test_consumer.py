"""get_access_token for integrators' Lambdas (a thin wrapper over apicbase_broker's BrokerClient,
which the layer ships), its documented IAM policy, and examples/consumer_lambda.py.

The broker's API is the real ConnectionsFunction on moto, behind API Gateway's stand-in
(local.adapter's events) on ``responses``; every request the helper makes is checked against
the policy README.md documents, as IAM would check it.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import responses
from local import adapter as gateway
from local import template as tpl

from apicbase_broker import BrokerError, Busy, ConfigurationError, ConnectionNotFound, NeedsReauthorization
from apicbase_oauth import connect, consumer, get_access_token

ROOT = Path(__file__).resolve().parents[2]
RECIPES = "https://api.apicbase.com/api/v2/products/recipes/"
REGION, ACCOUNT, API_ID = "eu-west-1", "123456789012", "abc123defg"
API_URL = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com"


def documented_policy() -> dict[str, Any]:
    """The JSON policy under README's heading for the layer's helper."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Lambda functions of your own: the layer's helper", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block, "README documents the helper's policy in a json block"
    text = block.group(1).replace("REGION", REGION).replace("ACCOUNT", ACCOUNT).replace("API_ID", API_ID)
    return dict(json.loads(text))


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """IAM's answer for an identity policy with Allow statements only (no Deny, no conditions):
    wildcards in actions and resources, '*' across '/' as IAM matches them."""
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement and "NotAction" not in statement
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


def invoke_arn(method: str, path: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/$default/{method}{path}"


@dataclass
class Broker:
    """API Gateway with IAM authorization in front of the real ConnectionsFunction: a request
    must be SigV4-signed for execute-api in the API's region, and the documented policy must
    allow it, or the answer is API Gateway's 403."""

    handler: Any
    lambda_context: Any
    policy: dict[str, Any] = field(default_factory=documented_policy)
    calls: list[tuple[str, str]] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        self.calls.append((request.method, parts.path))
        authorization = request.headers.get("Authorization", "")
        self.signatures.append(authorization)
        scope = f"/{REGION}/execute-api/aws4_request"
        if not authorization.startswith("AWS4-HMAC-SHA256 Credential=") or scope not in authorization:
            return 403, {"Content-Type": "application/json"}, json.dumps({"message": "Forbidden"})
        if not allows(self.policy, "execute-api:Invoke", invoke_arn(request.method, parts.path)):
            return 403, {"Content-Type": "application/json"}, json.dumps({"message": "Forbidden"})
        found = gateway.match(tpl.http_routes(tpl.load()), request.method, parts.path)
        assert found, parts.path
        route, parameters = found
        body = request.body or b""
        event = gateway.build_event(
            route,
            parameters,
            method=request.method,
            raw_path=parts.path,
            raw_query=parts.query,
            headers=list(request.headers.items()),
            body=body.encode() if isinstance(body, str) else body,
            source_ip="203.0.113.10",
        )
        status, headers, content = gateway.http_response(self.handler(event, self.lambda_context))
        return status, dict(headers), content.decode()


@pytest.fixture
def broker(load_handler, deps, lambda_context, apicbase, monkeypatch) -> Broker:
    module = load_handler("ConnectionsFunction")
    module.DEPS = deps  # the test's clock and moto session
    fake = Broker(module.lambda_handler, lambda_context)
    for method in (responses.GET, responses.POST):
        apicbase.mock.add_callback(method, re.compile(re.escape(API_URL) + "/.*"), callback=fake)
    # The integrator's function: the broker's URL and its role's credentials, none of the broker's settings.
    monkeypatch.setenv("APICBASE_BROKER_API_URL", API_URL)
    for name in ("TABLE_NAME", "TOKEN_KEY_ID", "CLIENT_SECRET_ID", "APICBASE_TOKEN_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(consumer, "_client", None)
    return fake


def seed(deps, fake, connection_id: str = "lib-1") -> str:
    access, refresh = fake.issue_pair()
    connect.import_tokens(deps, connection_id, access_token=access, refresh_token=refresh, expires_in=604800)
    return access


def load_example():
    spec = importlib.util.spec_from_file_location("consumer_lambda", ROOT / "examples" / "consumer_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_package_builds_nothing():
    # When a module of the layer is imported in a fresh interpreter
    code = "import sys, apicbase_oauth.errors; print('apicbase_oauth.connect' in sys.modules, 'boto3' in sys.modules)"
    env_path = str(ROOT / "layers" / "apicbase_oauth")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": env_path}
    ).stdout
    # Then neither the use cases nor boto3 were loaded
    assert out.split() == ["False", "False"]


def test_importing_the_helper_loads_no_use_case_and_no_boto3():
    code = (
        "import sys, apicbase_oauth.consumer; print(any(m in sys.modules for m in "
        "('apicbase_oauth.tokens', 'apicbase_oauth.deps', 'boto3', 'botocore', 'apicbase_broker')))"
    )
    env_path = str(ROOT / "layers" / "apicbase_oauth")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": env_path}
    ).stdout
    assert out.split() == ["False"]


# --- the documented policy ----------------------------------------------------------------------
def test_the_documented_policy_grants_execute_api_invoke_and_nothing_else():
    policy = documented_policy()
    assert {
        a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    } == {"execute-api:Invoke"}
    # Least privilege: the helper's routes, not the admin API's others
    assert allows(policy, "execute-api:Invoke", invoke_arn("GET", "/connections/lib-1/token"))
    assert allows(policy, "execute-api:Invoke", invoke_arn("POST", "/connections/lib-1/token"))
    for method, path in [
        ("GET", "/connections/lib-1"),
        ("DELETE", "/connections/lib-1"),
        ("PUT", "/connections/lib-1/tokens"),
        ("POST", "/connections/lib-1/refresh"),
        ("POST", "/connect-sessions"),
        ("GET", "/connections"),
    ]:
        assert not allows(policy, "execute-api:Invoke", invoke_arn(method, path)), (method, path)
    for action in ("dynamodb:GetItem", "kms:Decrypt", "secretsmanager:GetSecretValue", "execute-api:ManageConnections"):
        assert not allows(policy, action, "*")


def test_the_documented_policy_is_enough_for_every_call_the_helper_makes(broker, deps, apicbase):
    # Given a connection, and a function that holds only the documented policy
    old = seed(deps, apicbase)
    # When it gets a token, reports it rejected, and (another container) reports it again
    first = get_access_token("lib-1")
    newer = get_access_token("lib-1", rejected_token=old)
    cached = get_access_token("lib-1", rejected_token=old)
    consumer._client = None
    again = get_access_token("lib-1", rejected_token=old)
    # Then every call was allowed (no 403), signed, and these are exactly the routes it used: the
    # container's cache answered the repeated report, the broker the other container's, unrefreshed
    assert (first, cached, again) == (old, newer, newer) and newer != old
    assert broker.calls == [
        ("GET", "/connections/lib-1/token"),
        ("POST", "/connections/lib-1/token"),
        ("POST", "/connections/lib-1/token"),
    ]
    assert apicbase.refresh_requests == 1


def test_a_route_the_policy_does_not_allow_is_api_gateway_s_403(broker, deps, apicbase):
    # Given a role whose policy names only another connection
    broker.policy["Statement"][0]["Resource"] = [invoke_arn("GET", "/connections/lib-other/token")]
    seed(deps, apicbase)
    # When the helper asks, Then API Gateway's refusal is a BrokerError that says so
    with pytest.raises(BrokerError) as refused:
        get_access_token("lib-1")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


# --- signing and errors --------------------------------------------------------------------------
def test_requests_are_signed_with_sigv4_for_execute_api_in_the_url_s_region(broker, deps, apicbase):
    seed(deps, apicbase)
    get_access_token("lib-1")
    signature = broker.signatures[0]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=[A-Z0-9]+/\d{8}/eu-west-1/execute-api/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}",
        signature,
    ), signature
    assert consumer._client is not None and consumer._client.auth.region == REGION


def test_the_broker_s_errors_are_the_client_s_one_taxonomy(broker, deps, apicbase):
    with pytest.raises(ConnectionNotFound):
        get_access_token("lib-nobody")
    access = seed(deps, apicbase, "lib-gone")
    apicbase.revoke_all()  # access withdrawn in Apicbase: the refresh meets invalid_grant
    with pytest.raises(NeedsReauthorization):
        get_access_token("lib-gone", rejected_token=access)


def test_a_refresh_in_flight_is_busy_with_its_retry_after(broker, deps, apicbase, monkeypatch):
    # Given the broker answers that another refresh holds the connection
    seed(deps, apicbase)
    refusal = {"error": {"code": "refresh_in_progress", "message": "being refreshed"}}
    monkeypatch.setattr(broker, "handler", lambda *_: {"statusCode": 409, "body": json.dumps(refusal)})
    # Then the helper raises the client's Busy, as BrokerClient does
    with pytest.raises(Busy) as busy:
        get_access_token("lib-1")
    assert busy.value.code == "refresh_in_progress"


def test_a_rejected_token_that_is_not_a_token_is_refused_by_the_broker(broker, deps, apicbase):
    seed(deps, apicbase)
    with pytest.raises(BrokerError) as refused:
        get_access_token("lib-1", rejected_token="has spaces\n")
    assert (refused.value.status, refused.value.code) == (400, "invalid_rejected_token")
    assert apicbase.refresh_requests == 0


@pytest.mark.parametrize("variable", ["APICBASE_BROKER_API_URL", "BROKER_API_URL"])
def test_the_broker_s_url_comes_from_its_variable_or_the_older_name(monkeypatch, variable):
    for name in ("APICBASE_BROKER_API_URL", "BROKER_API_URL", "APICBASE_BROKER_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "http://127.0.0.1:3000")
    monkeypatch.setattr(consumer, "_client", None)
    with responses.RequestsMock() as mock:
        mock.get("http://127.0.0.1:3000/connections/lib-1/token", json={"access_token": "tok", "expires_in": 60})
        assert get_access_token("lib-1") == "tok"
        # The local run is called unsigned
        assert "Authorization" not in mock.calls[0].request.headers


def test_without_the_broker_s_url_the_helper_says_what_to_set(monkeypatch):
    for name in ("APICBASE_BROKER_API_URL", "BROKER_API_URL", "APICBASE_BROKER_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(consumer, "_client", None)
    with pytest.raises(ConfigurationError, match="APICBASE_BROKER_API_URL"):
        get_access_token("lib-1")


@pytest.mark.parametrize("url", ["http://broker.example.com", "ftp://x", "not a url"])
def test_a_broker_url_that_is_not_https_is_refused(monkeypatch, url):
    monkeypatch.setenv("APICBASE_BROKER_API_URL", url)
    monkeypatch.setattr(consumer, "_client", None)
    with pytest.raises(ConfigurationError):
        get_access_token("lib-1")


# --- the example ------------------------------------------------------------------------------------
def test_example_retries_once_with_a_fresh_token_after_a_401(broker, deps, apicbase, monkeypatch):
    # Given a stored token that Apicbase's API rejects once
    access = seed(deps, apicbase)
    apicbase.mock.get(RECIPES, status=401, json={"detail": "invalid token"})
    apicbase.mock.get(RECIPES, status=200, json={"results": [{"name": "Soup"}]})
    monkeypatch.setenv("APICBASE_CONNECTION_ID", "lib-1")
    # When the example function runs
    result = load_example().lambda_handler({}, None)
    # Then it refreshed once (through the broker) and the retry carried the new token
    calls = [c for c in apicbase.mock.calls if c.request.url == RECIPES]
    assert result == {"results": [{"name": "Soup"}]}
    assert apicbase.refresh_requests == 1
    assert calls[0].request.headers["Authorization"] == f"Bearer {access}"
    assert calls[1].request.headers["Authorization"] != f"Bearer {access}"


def test_example_gives_up_after_one_retry(broker, deps, apicbase):
    # Given an API that rejects every token
    seed(deps, apicbase)
    apicbase.mock.get(RECIPES, status=401, json={"detail": "invalid token"})
    # When the example calls it, Then it fails after exactly one refresh and two calls
    with pytest.raises(requests.HTTPError):
        load_example().call_apicbase("lib-1", "/products/recipes/")
    assert apicbase.refresh_requests == 1
    assert len([c for c in apicbase.mock.calls if c.request.url == RECIPES]) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [({}, "missing_field"), ({"rejected_token": "x", "scope": "all"}, "unknown_field"), ([], "invalid_body")],
)
def test_the_rejected_token_route_takes_exactly_one_field(broker, deps, apicbase, body, code):
    seed(deps, apicbase)
    with pytest.raises(BrokerError) as refused:
        consumer._get_client().request("POST", "/connections/lib-1/token", body=body)
    assert refused.value.code == code
    assert apicbase.refresh_requests == 0
