"""local/iam.py, the evaluator the local run enforces: IAM's rules where it decides, and a refusal
wherever it cannot decide (never more lenient than AWS)."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from local import iam
from local import template as tpl

from tests.conftest import REGION

TABLE = "arn:aws:dynamodb:eu-west-1:123456789012:table/t"


def allow(condition: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    statement = {"Sid": "S", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE, **fields}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def get(context: dict[str, list[str]] | None = None, known: set[str] | None = None, **fields: Any) -> iam.Call:
    values = {"action": "dynamodb:GetItem", "resource": TABLE, **fields}
    return iam.Call(context=context or {}, known=None if known is None else frozenset(known), **values)


@pytest.mark.parametrize(
    ("statement", "call", "allowed"),
    [
        (allow(), get(), True),
        (allow(Action="DynamoDB:get*"), get(), True),  # actions are case-blind, with wildcards
        (allow(Action="dynamodb:Get?tem"), get(), True),
        (allow(Resource=TABLE + "/index/*"), get(), False),
        (allow(Resource="arn:aws:dynamodb:*:*:table/T"), get(), False),  # resources are case-sensitive
        (allow(NotAction="dynamodb:PutItem", Action=None), get(), True),
        (allow(Effect="Deny"), get(), False),
    ],
    ids=["exact", "action-wildcard", "single-char", "other-resource", "resource-case", "not-action", "deny"],
)
def test_actions_and_resources_match_as_iam_matches_them(statement, call, allowed) -> None:
    statement = {k: v for k, v in statement.items() if v is not None}
    assert iam.evaluate([statement], call).allowed is allowed


LEADING = "dynamodb:LeadingKeys"


@pytest.mark.parametrize(
    ("condition", "context", "allowed"),
    [
        ({"ForAllValues:StringLike": {LEADING: ["CONN#*"]}}, {LEADING: ["CONN#a"]}, True),
        ({"ForAllValues:StringLike": {LEADING: ["CONN#*"]}}, {LEADING: ["BUDGET#a"]}, False),
        ({"ForAllValues:StringLike": {LEADING: ["CONN#*"]}}, {LEADING: ["CONN#a", "STATE#b"]}, False),
        ({"ForAllValues:StringLike": {LEADING: ["CONN#*"]}}, {}, True),  # IAM: an absent key passes
        ({"ForAnyValue:StringLike": {LEADING: ["CONN#*"]}}, {}, False),
        ({"ForAllValues:StringNotEquals": {"dynamodb:Attributes": ["tokens"]}}, {"dynamodb:Attributes": ["pk"]}, True),
        (
            {"ForAllValues:StringNotEquals": {"dynamodb:Attributes": ["tokens"]}},
            {"dynamodb:Attributes": ["tokens"]},
            False,
        ),
        ({"StringEquals": {"k:x": "a"}}, {"k:x": ["a"]}, True),
        ({"StringEquals": {"k:x": ["b", "a"]}}, {"k:x": ["a"]}, True),  # a key's values are alternatives
        ({"StringEquals": {"k:x": "a"}}, {}, False),  # absent: a positive operator fails
        ({"StringNotEquals": {"k:x": "a"}}, {}, True),  # absent: a negated operator holds
        ({"StringEqualsIfExists": {"k:x": "a"}}, {}, True),
        ({"StringEquals": {"k:x": "a"}}, {"k:x": ["a", "b"]}, False),  # multivalued without a qualifier
        ({"Null": {"k:x": "false"}}, {"k:x": ["a"]}, True),
        ({"Null": {"k:x": "false"}}, {}, False),
        ({"Null": {"k:x": "true"}}, {}, True),
        ({"StringEquals": {"K:X": "a"}}, {"k:x": ["a"]}, True),  # key names are case-blind
        ({"StringEquals": {"kms:EncryptionContext:Purpose": "a"}}, {"kms:EncryptionContext:purpose": ["a"]}, False),
        ({"StringEquals": {"k:x": "a"}, "StringLike": {"k:y": "b*"}}, {"k:x": ["a"], "k:y": ["c"]}, False),
        ({"NumericLessThan": {"k:x": "5"}}, {"k:x": ["1"]}, False),  # an operator not implemented
        ({"StringEquals": {"k:x": "${aws:username}"}}, {"k:x": ["a"]}, False),  # a policy variable
    ],
)
def test_conditions_follow_iam_and_refuse_what_they_cannot_decide(condition, context, allowed) -> None:
    assert iam.evaluate([allow(condition)], get(context)).allowed is allowed


def test_a_key_the_request_cannot_tell_never_allows_and_always_denies() -> None:
    # Given a call whose dynamodb:Attributes this module cannot know (a Query, say)
    call = get({}, known={"dynamodb:Select"})
    condition = {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk"]}}
    # Then an Allow conditioned on it does not allow it (IAM would: the key absent), and a Deny
    # conditioned on it denies it
    decision = iam.evaluate([allow(condition)], call)
    assert not decision.allowed and decision.undecided == ("S",)
    assert "cannot decide" in decision.reason()
    assert not iam.evaluate([allow(), allow(condition, Effect="Deny")], call).allowed


class _Model:
    """The part of a botocore operation model RequestContext reads."""

    def __init__(self, service: str, name: str) -> None:
        self.name = name
        self.service_model = boto3.session.Session(region_name=REGION).client(service).meta.service_model


REQUESTS = iam.RequestContext("eu-west-1", "123456789012", {"t": "pk"})


def test_a_dynamodb_request_carries_its_key_and_attributes() -> None:
    put = {"TableName": "t", "Item": {"pk": {"S": "STATE#x"}, "tokens": {"B": b"..."}}}
    (call,) = REQUESTS.calls(_Model("dynamodb", "PutItem"), {"body": json.dumps(put, default=str)})
    assert (call.action, call.resource) == ("dynamodb:PutItem", TABLE)
    assert call.context[LEADING] == ["STATE#x"]
    assert call.context["dynamodb:Attributes"] == ["pk", "tokens"]
    update = {
        "TableName": "t",
        "Key": {"pk": {"S": "BUDGET#u#1"}},
        "UpdateExpression": "ADD #count :one SET #ttl = if_not_exists(#ttl, :ttl), a.b = :v REMOVE c",
        "ConditionExpression": "attribute_not_exists(#count) OR #count < :limit",
        "ExpressionAttributeNames": {"#count": "count", "#ttl": "ttl"},
    }
    (call,) = REQUESTS.calls(_Model("dynamodb", "UpdateItem"), {"body": json.dumps(update)})
    assert call.context["dynamodb:Attributes"] == ["a", "c", "count", "pk", "ttl"]
    query = {"TableName": "t", "IndexName": "i", "KeyConditionExpression": "e = :e"}
    (call,) = REQUESTS.calls(_Model("dynamodb", "Query"), {"body": json.dumps(query)})
    assert call.resource == TABLE + "/index/i"
    assert not call.knows(LEADING) and not call.knows("dynamodb:Attributes")


def test_kms_events_sqs_and_secrets_requests_as_iam_sees_them() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/" + "1" * 8 + "-1111-1111-1111-" + "1" * 12
    kms = {"KeyId": key, "EncryptionContext": {"purpose": "p", "connection_id": "c"}}
    (call,) = REQUESTS.calls(_Model("kms", "GenerateDataKey"), {"body": json.dumps(kms)})
    assert call.resource == key and call.context["kms:EncryptionContextKeys"] == ["connection_id", "purpose"]
    assert call.knows("kms:EncryptionContext:anything") and call.values("kms:ViaService") is None
    (call,) = REQUESTS.calls(_Model("kms", "Decrypt"), {"body": json.dumps({"CiphertextBlob": "eA=="})})
    assert call.resource is None  # the key a ciphertext names is known only to KMS
    entries = {"Entries": [{"Source": "a", "DetailType": "d"}, {"Source": "b", "DetailType": "d", "EventBusName": "x"}]}
    first, second = REQUESTS.calls(_Model("events", "PutEvents"), {"body": json.dumps(entries)})
    assert first.resource.endswith(":event-bus/default") and first.context["events:source"] == ["a"]
    assert second.resource.endswith(":event-bus/x")
    url = {"QueueUrl": "http://127.0.0.1:5000/123456789012/q", "Entries": []}
    (call,) = REQUESTS.calls(_Model("sqs", "SendMessageBatch"), {"body": json.dumps(url)})
    assert (call.action, call.resource) == ("sqs:SendMessage", "arn:aws:sqs:eu-west-1:123456789012:q")
    (call,) = REQUESTS.calls(_Model("secretsmanager", "GetSecretValue"), {"body": json.dumps({"SecretId": "name"})})
    assert call.resource is None  # by name: its ARN's suffix is known only to AWS


@pytest.mark.parametrize(("service", "code"), [("dynamodb", "AccessDeniedException"), ("sqs", "AccessDenied")])
def test_a_refused_call_raises_the_service_s_own_error_before_it_leaves(aws, service, code) -> None:
    # Given a session whose calls are evaluated against a role that allows nothing
    refusals: list[iam.Refusal] = []
    enforcer = iam.Enforcer("SomeFunction", [], REQUESTS, on_refusal=refusals.append)
    session = boto3.session.Session(region_name=REGION)
    enforcer.register(session.events)
    client = session.client(service)
    # When the function's code calls AWS
    with pytest.raises(ClientError) as raised:
        if service == "dynamodb":
            client.get_item(TableName=aws.refs["ConnectionsTable"], Key={"pk": {"S": "CONN#x"}})
        else:
            client.send_message(QueueUrl=aws.refs["RefreshQueue"], MessageBody="x")
    # Then the client raises AWS's refusal, and the refusal is reported with its function
    assert raised.value.response["Error"]["Code"] == code
    assert "is not authorized to perform" in raised.value.response["Error"]["Message"]
    assert [r.function for r in refusals] == ["SomeFunction"] and enforcer.refused == 1


def test_each_role_is_read_as_sam_translates_it(template) -> None:
    """Given the template, then each function's statements read by the local run are those of
    the role SAM's own translator builds (inline documents pass through it unchanged)."""
    for name in tpl.functions(template):
        assert iam.role_statements(template, name) == iam.translated_role_statements(template, name), name


def test_a_sam_policy_template_is_read_from_sam_s_translation(template) -> None:
    # Given a function that also names a SAM policy template
    widened = copy.deepcopy(template)
    policies = widened["Resources"]["RefreshSchedulerFunction"]["Properties"]["Policies"]
    policies.append({"DynamoDBReadPolicy": {"TableName": {"Ref": "ConnectionsTable"}}})
    # When its statements are resolved for the local run
    refs = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "ConnectionsTable": "t"}
    statements = iam.statements(widened, "RefreshSchedulerFunction", refs)
    # Then SAM's expansion is there, resolved, next to the inline statements
    assert iam.evaluate(statements, get(resource=TABLE)).allowed
    assert {"FindDueConnections", "QueueRefreshes"} <= {s.get("Sid") for s in statements}
