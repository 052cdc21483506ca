"""A small IAM evaluator for the functions' inline policies, and a recorder of the AWS calls the
code really makes, so that tests can prove a role allows what its function does (moto does not
enforce IAM) and refuses what it must not do.

Only what the template uses is evaluated: Allow statements (there are no Deny), Action and
Resource wildcards, and the condition operators below. A statement conditioned on a key the
call does not carry is refused unless the operator says what an absent key means (ForAllValues,
Null): stricter than IAM only where IAM would depend on a key this evaluator cannot know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from local import template as tpl

Context = dict[str, list[str]]


@dataclass(frozen=True)
class Call:
    """One AWS request as IAM sees it: the action, the resource and the condition keys."""

    action: str
    resource: str
    context: Context = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} {json.dumps(self.context, sort_keys=True)}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _condition_holds(operator: str, key: str, expected: list[str], context: Context) -> bool:
    values = context.get(key)
    if operator == "Null":
        return (values is None) == (expected == ["true"])
    if operator.startswith("ForAllValues:"):
        match = _OPERATORS[operator.split(":", 1)[1]]
        return all(match(value, expected) for value in values or [])
    if values is None:
        return False
    return all(_OPERATORS[operator](value, expected) for value in values)


_OPERATORS: dict[str, Callable[[str, list[str]], bool]] = {
    "StringEquals": lambda value, expected: value in expected,
    "StringNotEquals": lambda value, expected: value not in expected,
    "StringLike": _like,
}


def allows(statement: dict[str, Any], call: Call) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if not _like(call.action.lower(), [a.lower() for a in _as_list(statement["Action"])]):
        return False
    if not _like(call.resource, _as_list(statement["Resource"])):
        return False
    return all(
        _condition_holds(operator, key, [str(v) for v in _as_list(expected)], call.context)
        for operator, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )


class _Names(dict[str, str]):
    """Physical names for !Ref and !GetAtt where no stack was provisioned: the logical id itself."""

    def __missing__(self, key: str) -> str:
        return key


def statements(template: dict[str, Any], logical_id: str, refs: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The function's policy statements with intrinsics resolved (by ``refs``, else by name)."""
    function = tpl.functions(template)[logical_id]
    names = _Names({"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", **(refs or {})})
    return [tpl.resolve(statement, names) for statement in tpl.policy_statements(function)]


def allowed(template: dict[str, Any], logical_id: str, call: Call, refs: dict[str, str] | None = None) -> bool:
    return any(allows(statement, call) for statement in statements(template, logical_id, refs))


# --- what the code really calls ---------------------------------------------------------------
# IAM's name for an operation where it is not the operation's own.
_ACTIONS = {"sqs:SendMessageBatch": "sqs:SendMessage"}


class Recorder:
    """Records every call of the clients it is attached to as a ``Call`` (botocore's before-call
    sees the serialized request, so the key, the index and the encryption context are the ones
    really sent)."""

    def __init__(self, refs: dict[str, str]) -> None:
        self.refs = refs
        self.calls: list[Call] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._before)

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        prefix = model.service_model.endpoint_prefix
        action = f"{prefix}:{model.name}"
        request = json.loads(params.get("body") or b"{}")
        resource, context = getattr(self, f"_{prefix}", self._other)(request)
        self.calls.append(Call(_ACTIONS.get(action, action), resource, context))

    def _dynamodb(self, request: dict[str, Any]) -> tuple[str, Context]:
        region, account = self.refs["AWS::Region"], self.refs["AWS::AccountId"]
        table = f"arn:aws:dynamodb:{region}:{account}:table/{request['TableName']}"
        if "IndexName" in request:
            return f"{table}/index/{request['IndexName']}", {}
        item = request.get("Item")
        key = request.get("Key") or item
        context: Context = {"dynamodb:LeadingKeys": [key["pk"]["S"]]} if key else {}
        if item is not None:
            context["dynamodb:Attributes"] = sorted(item)
        return table, context

    def _kms(self, request: dict[str, Any]) -> tuple[str, Context]:
        encryption_context = request.get("EncryptionContext", {})
        context = {f"kms:EncryptionContext:{k}": [v] for k, v in encryption_context.items()}
        if encryption_context:
            context["kms:EncryptionContextKeys"] = sorted(encryption_context)
        return request["KeyId"], context

    def _events(self, request: dict[str, Any]) -> tuple[str, Context]:
        buses = {entry.get("EventBusName", "default") for entry in request["Entries"]}
        assert len(buses) == 1, buses
        region, account = self.refs["AWS::Region"], self.refs["AWS::AccountId"]
        bus = f"arn:aws:events:{region}:{account}:event-bus/{buses.pop()}"
        return bus, {"events:source": [entry["Source"] for entry in request["Entries"]]}

    def _secretsmanager(self, request: dict[str, Any]) -> tuple[str, Context]:
        return request["SecretId"], {}

    def _sqs(self, request: dict[str, Any]) -> tuple[str, Context]:
        # The stack's queue "ARN" is its URL in the local provisioning (local/aws.py), as is QueueUrl.
        return request["QueueUrl"], {}

    @staticmethod
    def _other(request: dict[str, Any]) -> tuple[str, Context]:
        return "?", {}
