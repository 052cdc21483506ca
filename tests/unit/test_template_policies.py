"""Least privilege, read from template.yaml: what each function's role may do, which routes are
public, and what the logs may carry. A loosened template fails here before it is deployed."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest
from local import iam
from local import template as tpl

CALLBACK = "CallbackFunction"
CALLBACK_ROUTE = ("GET", "/oauth/callback")
START_ROUTE = ("GET", "/oauth/start")  # connect_url, on the callback's function
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


def test_the_callback_can_still_seal_tokens(functions: dict[str, tpl.Function]) -> None:
    """Given the callback's role, then it may take data keys (the checks above are not vacuous)."""
    assert _can(functions[CALLBACK], "kms:GenerateDataKey")


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


# --- conditions: which items, which encryption context, which event source ------------------------
# Evaluated with local/iam.py on calls made up here; test_policies_allow_the_calls.py
# evaluates the calls the code really makes against the same statements.
TABLE, KEY = "ConnectionsTable.Arn", "TokenKey.Arn"
STATE_PK, CONN_PK = "STATE#" + "0" * 64, "CONN#lib-42"
START_PK, RESCUE_PK = "START#" + "b" * 64, "RESCUE#lib-42"
ITEM_ACTIONS = ["GetItem", "PutItem", "UpdateItem", "DeleteItem"]
SESSION_ATTRIBUTES = ["pk", "connection_id", "application", "client_id", "scopes", "redirect_uri", "state_expires_at"]
TOKEN_CONTEXT = {"connection_id": "lib-42", "purpose": "apicbase-oauth-tokens"}
KMS_USE = ["kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"]


def _item(action: str, pk: str, attributes: list[str] | None = None) -> iam.Call:
    context = {"dynamodb:LeadingKeys": [pk]}
    if attributes is not None:
        context["dynamodb:Attributes"] = attributes
    return iam.Call(f"dynamodb:{action}", TABLE, context)


def _kms(action: str, encryption_context: dict[str, str]) -> iam.Call:
    context = {f"kms:EncryptionContext:{k}": [v] for k, v in encryption_context.items()}
    if encryption_context:
        context["kms:EncryptionContextKeys"] = sorted(encryption_context)
    return iam.Call(action, KEY, context)


def _item_rights(template: dict[str, Any], function: str) -> set[tuple[str, str]]:
    """(action, item kind) pairs the function may do on the table."""
    return {
        (action, pk.split("#")[0])
        for action in ITEM_ACTIONS
        for pk in (STATE_PK, CONN_PK, START_PK, RESCUE_PK)
        if iam.allowed(template, function, _item(action, pk, SESSION_ATTRIBUTES if action == "PutItem" else None))
    }


@pytest.mark.parametrize(
    ("function", "rights"),
    [
        # The public callback takes a start (connect_url), binds and consumes states, writes
        # connections and parks a grant it could not write; it can neither delete a connection,
        # nor plant or read a state, nor read a connection or a parked pair.
        (
            CALLBACK,
            {
                ("DeleteItem", "START"),
                ("DeleteItem", "STATE"),
                ("UpdateItem", "STATE"),
                ("UpdateItem", "CONN"),
                ("PutItem", "RESCUE"),
            },
        ),
        # The admin API puts states and starts (never reads or deletes them), manages connections
        # (a DELETE leaves a tombstone: an UpdateItem), and parks, applies and removes parked pairs.
        (
            "ConnectionsFunction",
            {
                ("PutItem", "STATE"),
                ("PutItem", "START"),
                ("GetItem", "CONN"),
                ("UpdateItem", "CONN"),
                ("PutItem", "RESCUE"),
                ("GetItem", "RESCUE"),
                ("DeleteItem", "RESCUE"),
            },
        ),
        (
            "RefreshWorkerFunction",
            {
                ("GetItem", "CONN"),
                ("UpdateItem", "CONN"),
                ("PutItem", "RESCUE"),
                ("GetItem", "RESCUE"),
                ("DeleteItem", "RESCUE"),
            },
        ),
        ("RefreshSchedulerFunction", set()),
        # The events function reads the table's stream, never an item.
        ("ConnectionEventsFunction", set()),
    ],
)
def test_each_function_may_touch_only_its_own_kind_of_item(template, function, rights) -> None:
    """Given each function's role, when every item action is tried on a state key and on a
    connection key, then exactly the function's own pairs are allowed (dynamodb:LeadingKeys)."""
    assert _item_rights(template, function) == rights


def test_every_item_statement_names_its_key_prefix_and_queries_only_an_index(template, functions) -> None:
    """Given every DynamoDB statement, then one on items carries a dynamodb:LeadingKeys condition,
    and a Query is allowed on an index only (never on the table, whose items hold tokens)."""
    problems = []
    for name in functions:
        for statement in iam.statements(template, name):
            actions = _as_list(statement["Action"])
            if any(a.removeprefix("dynamodb:") in ITEM_ACTIONS for a in actions):
                leading = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
                if "dynamodb:LeadingKeys" not in leading:
                    problems.append(f"{name}/{statement.get('Sid')}: no dynamodb:LeadingKeys")
            if "dynamodb:Query" in actions and not all("/index/" in r for r in _as_list(statement["Resource"])):
                problems.append(f"{name}/{statement.get('Sid')}: Query beyond an index")
    assert problems == []


@pytest.mark.parametrize("attribute", ["tokens", "entity", "refresh_queue"])
def test_a_state_item_can_carry_no_tokens_and_never_pass_for_a_connection(template, attribute) -> None:
    """Given the admin API's role, when it puts a state item that also holds tokens, or `entity` or
    `refresh_queue` (which would list it as a connection or queue it for refresh), then it is
    refused; the session's own attributes are allowed."""
    assert iam.allowed(template, "ConnectionsFunction", _item("PutItem", STATE_PK, SESSION_ATTRIBUTES))
    widened = _item("PutItem", STATE_PK, [*SESSION_ATTRIBUTES, attribute])
    assert not iam.allowed(template, "ConnectionsFunction", widened)


def test_every_kms_statement_is_conditioned_on_the_purpose_and_a_connection(functions) -> None:
    """Given every statement that allows a KMS action, then it requires purpose
    apicbase-oauth-tokens, no encryption-context key but connection_id and purpose, and a
    connection_id present (so no function can use the key for anything but a connection's tokens)."""
    expected = {
        "StringEquals": {"kms:EncryptionContext:purpose": "apicbase-oauth-tokens"},
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["connection_id", "purpose"]},
        "Null": {"kms:EncryptionContext:connection_id": "false"},
    }
    kms_statements = [
        (name, statement)
        for name, fn in functions.items()
        for statement in tpl.policy_statements(fn)
        if any(str(a).startswith("kms:") for a in _as_list(statement["Action"]))
    ]
    assert len(kms_statements) == 3
    assert [name for name, statement in kms_statements if statement.get("Condition") != expected] == []


@pytest.mark.parametrize(
    "encryption_context",
    [
        {},
        {"connection_id": "lib-42"},
        {"purpose": "apicbase-oauth-tokens"},
        {"connection_id": "lib-42", "purpose": "something-else"},
        {**TOKEN_CONTEXT, "extra": "x"},
    ],
    ids=["none", "no-purpose", "no-connection", "other-purpose", "extra-key"],
)
@pytest.mark.parametrize("action", KMS_USE)
def test_the_key_refuses_any_other_encryption_context(template, functions, encryption_context, action) -> None:
    """Given every role, when the key is used with a missing, foreign or widened encryption
    context, then no role allows it."""
    assert [name for name in functions if iam.allowed(template, name, _kms(action, encryption_context))] == []


def test_each_role_has_exactly_the_kms_rights_of_envelope_encryption(template, functions) -> None:
    """Given every role, then with the tokens' context it may take data keys where it seals pairs
    and open them where it reads pairs; kms:Encrypt nowhere (envelopes seal locally), and Decrypt
    never on the callback."""
    rights = {name: {a for a in KMS_USE if iam.allowed(template, name, _kms(a, TOKEN_CONTEXT))} for name in functions}
    assert rights == {
        CALLBACK: {"kms:GenerateDataKey"},
        "ConnectionsFunction": {"kms:GenerateDataKey", "kms:Decrypt"},
        "RefreshWorkerFunction": {"kms:GenerateDataKey", "kms:Decrypt"},
        "RefreshSchedulerFunction": set(),
        "ConnectionEventsFunction": set(),
    }


def test_only_the_events_function_puts_events_and_only_under_the_stacks_own_source(template, functions) -> None:
    """Given every role, then only the events function may put events (they follow from the
    table's stream), and only with this stack's source: a compromised function cannot forge
    another application's events on the default bus."""
    bus = "arn:aws:events:AWS::Region:AWS::AccountId:event-bus/default"
    ours = iam.Call("events:PutEvents", bus, {"events:source": ["apicbase-oauth-broker.AWS::StackName"]})
    forged = iam.Call("events:PutEvents", bus, {"events:source": ["aws.s3"]})
    emitting = [name for name in functions if iam.allowed(template, name, ours)]
    assert emitting == ["ConnectionEventsFunction"]
    assert [name for name in functions if iam.allowed(template, name, forged)] == []


STREAM_ACTIONS = ["dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:DescribeStream"]


@pytest.mark.parametrize("action", STREAM_ACTIONS)
def test_only_the_events_function_reads_the_tables_stream(template, functions, action) -> None:
    """Given every role, when a stream read is tried on the table's stream and on another table's,
    then only the events function may, and only on this table's: the stream's images hold every
    connection's sealed tokens."""
    ours = iam.Call(action, "ConnectionsTable.StreamArn")
    other = iam.Call(action, "arn:aws:dynamodb:eu-west-1:123456789012:table/other/stream/2026-01-01T00:00:00.000")
    assert [name for name in functions if iam.allowed(template, name, ours)] == ["ConnectionEventsFunction"]
    assert [name for name in functions if iam.allowed(template, name, other)] == []
