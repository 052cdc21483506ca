"""Least privilege, read from template.yaml: what each function's role may do, which routes are
public, and what the logs may carry. A loosened template fails here before it is deployed."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest
from local import template as tpl

CALLBACK = "CallbackFunction"
CALLBACK_ROUTE = ("GET", "/oauth/callback")
START_ROUTE = ("GET", "/oauth/start")  # connect_url (issue 12), on the callback's function
# Each of these reads plaintext out of a ciphertext: ReEncryptFrom re-wraps it under a key the
# caller can decrypt, and a grant can confer Decrypt.
DECRYPTING_KMS_ACTIONS = ["kms:Decrypt", "kms:ReEncryptFrom", "kms:CreateGrant"]
# Each of these reads the whole table, tokens included, without knowing a key.
TABLE_READING_ACTIONS = ["dynamodb:Scan", "dynamodb:PartiQLSelect"]
# Access-log variables that carry the query string (the callback's code and state).
QUERY_STRING_LOG_VARIABLE = re.compile(r"querystring|\$request\.", re.IGNORECASE)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allowed_actions(function: tpl.Function) -> list[str]:
    return [
        action
        for statement in tpl.policy_statements(function)
        if statement.get("Effect") == "Allow"
        for action in _as_list(statement.get("Action", []))
    ]


def _can(function: tpl.Function, action: str) -> bool:
    """Whether an Allow names the action itself or a wildcard that covers it (IAM is case-blind)."""
    return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in _allowed_actions(function))


@pytest.fixture(scope="module")
def functions(template: dict[str, Any]) -> dict[str, tpl.Function]:
    return tpl.functions(template)


@pytest.mark.parametrize("action", DECRYPTING_KMS_ACTIONS)
def test_the_public_callback_cannot_decrypt_tokens(functions: dict[str, tpl.Function], action: str) -> None:
    """Given the callback's role, when its allowed actions are matched against a decrypting KMS
    action, then none covers it: a compromised callback can store tokens but never read them."""
    assert not _can(functions[CALLBACK], action)


def test_the_callback_can_still_encrypt_tokens(functions: dict[str, tpl.Function]) -> None:
    """Given the callback's role, then it may kms:Encrypt (the checks above are not vacuous)."""
    assert _can(functions[CALLBACK], "kms:Encrypt")


@pytest.mark.parametrize("action", TABLE_READING_ACTIONS)
def test_no_function_can_read_the_whole_table(functions: dict[str, tpl.Function], action: str) -> None:
    """Given every function's role, when matched against a table-wide read, then none allows it."""
    assert [name for name, fn in functions.items() if _can(fn, action)] == []


def test_every_permission_is_an_inline_statement_with_a_named_resource(functions: dict[str, tpl.Function]) -> None:
    """Given every function's Policies, then each is an inline policy document (no managed
    policy or SAM policy template whose scope this test cannot see), and each statement names
    its resources: no "*" and no NotAction/NotResource."""
    problems = []
    for name, fn in functions.items():
        for policy in fn.properties.get("Policies", []):
            if not (isinstance(policy, dict) and set(policy) <= {"Version", "Statement"}):
                problems.append(f"{name}: not an inline policy document: {policy!r}")
        for statement in tpl.policy_statements(fn):
            sid = statement.get("Sid", "?")
            if {"NotAction", "NotResource"} & set(statement):
                problems.append(f"{name}/{sid}: NotAction or NotResource")
            resources = _as_list(statement.get("Resource", "*"))
            if any(isinstance(resource, str) and "*" in resource for resource in resources):
                problems.append(f"{name}/{sid}: wildcard resource {resources!r}")
    assert problems == []


def test_every_function_has_a_role_of_its_own(template: dict[str, Any], functions: dict[str, tpl.Function]) -> None:
    """Given the functions and the Globals, then none names a Role: SAM creates one role per
    function from its own Policies, so no function holds another's permissions."""
    assert "Role" not in template.get("Globals", {}).get("Function", {})
    assert [name for name, fn in functions.items() if "Role" in fn.properties] == []
    assert all(tpl.policy_statements(fn) for fn in functions.values())


def test_the_callback_is_the_only_public_route(template: dict[str, Any]) -> None:
    """Given the HTTP routes, then GET /oauth/callback and GET /oauth/start (connect_url, served
    by the same function) have no authorizer and every other route (the admin API) is signed
    with AWS_IAM."""
    routes = {(route.method, route.path): route.authorizer for route in tpl.http_routes(template)}
    assert routes.pop(CALLBACK_ROUTE) == "NONE"
    assert routes.pop(START_ROUTE) == "NONE"
    assert routes
    assert set(routes.values()) == {"AWS_IAM"}


def test_a_route_added_without_auth_is_signed_by_default(template: dict[str, Any]) -> None:
    """Given the HTTP API, then its default authorizer is AWS_IAM, so a route that forgets its
    Auth block is private rather than public."""
    auth = tpl.resource(template, "HttpApi")["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "AWS_IAM"
    assert auth["EnableIamAuthorizer"] is True


def test_no_function_logs_its_incoming_event(functions: dict[str, tpl.Function]) -> None:
    """Given every function's environment, then POWERTOOLS_LOGGER_LOG_EVENT is "false": the
    callback's event carries the authorization code and the state."""
    assert {name: fn.environment.get("POWERTOOLS_LOGGER_LOG_EVENT") for name, fn in functions.items()} == {
        name: "false" for name in functions
    }


def test_the_access_log_carries_no_query_string(template: dict[str, Any]) -> None:
    """Given the HTTP API's access log format, then it has one, and no variable in it holds the
    query string."""
    log_format = tpl.resource(template, "HttpApi")["Properties"]["AccessLogSettings"]["Format"]
    assert "$context.requestId" in log_format
    assert QUERY_STRING_LOG_VARIABLE.findall(log_format) == []


def test_every_checkov_skip_says_why(template: dict[str, Any]) -> None:
    """Given the checkov skips written beside the resources, then each names a check and gives
    a reason, so CI's "no failed check" hides nothing unexplained."""
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    assert [name for name, skip in skips if not (skip.get("id") and len(skip.get("comment", "")) > 20)] == []
