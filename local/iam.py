"""IAM as AWS applies it to a function's own calls: each function's role, read from template.yaml,
evaluated on every AWS request its code makes, in the local run and in the tests.

- ``role_statements``: the statements of a function's role as SAM deploys it. Inline policy
  documents are read as they stand (SAM passes them through unchanged); anything else (a SAM
  policy template, a ``Role`` of the template's own) is read from SAM's own translation of the
  template, so nothing here is a copy of the policies.
- ``RequestContext``: what IAM sees of a botocore request: the action, the resource's ARN and the
  condition keys (``dynamodb:LeadingKeys``, ``dynamodb:Attributes``, ``kms:EncryptionContext:*``,
  ``events:source``, ...), from the request as serialized, so the key, index and encryption context
  are the ones really sent.
- ``evaluate``: explicit Deny wins, then any Allow, else refused. Conditions: the string, ARN and
  Bool operators, ``Null``, ``...IfExists``, ``ForAllValues:`` and ``ForAnyValue:``. A condition
  this module cannot decide (an operator it does not implement, a policy variable, a key it cannot
  know for that request, a request it does not model) never allows and always denies: stricter
  than IAM there, never more lenient.
- ``Enforcer``: a botocore ``before-call`` handler that refuses what the role does not allow with
  the error AWS answers (``AccessDeniedException``; SQS ``AccessDenied``), raised by the client as
  a ``ClientError``, so the product's own error handling is what answers.

What no local evaluation can know: resource-based policies (the KMS key policy and its grants,
queue and secret policies), SCPs and RCPs, permission boundaries, session policies, VPC endpoint
policies, the AWS managed policies SAM attaches for the platform (logs, X-Ray, the SQS poller),
and condition keys whose values only AWS has (``kms:ViaService`` of a call through another
service, ``aws:SourceIp``, tags).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local import template as tpl

Context = dict[str, list[str]]
Statement = dict[str, Any]

# Keys every request carries, as a Lambda function's call in AWS would.
GLOBAL_KEYS = ("aws:RequestedRegion", "aws:PrincipalAccount", "aws:PrincipalType", "aws:SecureTransport")
# IAM's name for an operation where it is not the operation's own.
ACTION_NAMES = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
# The error each service answers a refused call with: (code, HTTP status).
DENIED = {"sqs": ("AccessDenied", 403)}
DENIED_DEFAULT = ("AccessDeniedException", 400)


# --- the request as IAM sees it ------------------------------------------------------------------
def _key_name(key: str) -> str:
    """Condition key names are case-blind; what follows a second colon (an encryption-context
    key) is compared as written."""
    service, _, rest = key.partition(":")
    name, colon, tail = rest.partition(":")
    return f"{service.lower()}:{name.lower()}{colon}{tail}"


@dataclass(frozen=True)
class Call:
    """One request as IAM sees it. ``context`` holds the keys present; ``known`` names the keys
    whose presence or absence is known (None: every key, as in calls made up by tests). A
    ``resource`` of None is a request this module does not model: nothing allows it."""

    action: str
    resource: str | None
    context: Context = field(default_factory=dict)
    known: frozenset[str] | None = None

    def knows(self, key: str) -> bool:
        if self.known is None:
            return True
        name = _key_name(key)
        return any(_key_name(k) == name for k in self.known) or (
            name.startswith("kms:encryptioncontext:") and "kms:EncryptionContext:*" in self.known
        )

    def values(self, key: str) -> list[str] | None:
        name = _key_name(key)
        return next((v for k, v in self.context.items() if _key_name(k) == name), None)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource or '(a request the local run does not model)'} " + json.dumps(
            self.context, sort_keys=True
        )


# --- evaluation -----------------------------------------------------------------------------------
def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str, *, case: bool = True) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, 0 if case else re.IGNORECASE | re.DOTALL)


def _like(value: str, pattern: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


# Positive matchers; a "Not" operator is its positive one negated over all the policy's values.
_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda value, expected: value == expected,
    "StringEqualsIgnoreCase": lambda value, expected: value.casefold() == expected.casefold(),
    "StringLike": _like,
    "ArnEquals": _like,
    "ArnLike": _like,
    "Bool": lambda value, expected: value.lower() == expected.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _condition(operator: str, key: str, expected: list[str], call: Call) -> bool | None:
    """One operator on one key: True, False, or None when this module cannot decide."""
    if not call.knows(key):
        return None
    values = call.values(key)
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base == "Null":
        if qualifier or if_exists or expected not in (["true"], ["false"]):
            return None
        return (values is None) == (expected == ["true"])
    positive = _NEGATED.get(base, base)
    matcher = _MATCHERS.get(positive)
    if matcher is None or any("${" in value for value in expected):
        return None  # an operator not implemented, or a policy variable

    def holds(value: str) -> bool:
        hit = any(matcher(value, pattern) for pattern in expected)
        return not hit if base in _NEGATED else hit

    if qualifier == "ForAllValues":
        return True if not values else all(holds(value) for value in values)
    if qualifier == "ForAnyValue":
        return False if not values else any(holds(value) for value in values)
    if qualifier:
        return None
    if values is None:  # absent: IfExists holds, a negated operator holds, any other fails
        return if_exists or base in _NEGATED
    if len(values) != 1:  # a multivalued key needs a set qualifier
        return None
    return holds(values[0])


def _all(results: Iterable[bool | None]) -> bool | None:
    decided = list(results)
    if False in decided:
        return False
    return None if None in decided else True


def applies(statement: Statement, call: Call) -> bool | None:
    """Whether the statement covers the call (its Effect aside): True, False, or None when
    this module cannot decide."""
    if "Action" in statement:
        action_hit = any(_glob(a, case=False).fullmatch(call.action) for a in as_list(statement["Action"]))
    else:
        action_hit = not any(_glob(a, case=False).fullmatch(call.action) for a in as_list(statement["NotAction"]))
    if not action_hit:
        return False
    patterns = [str(r) for r in as_list(statement.get("Resource", statement.get("NotResource", [])))]
    if "Resource" in statement and "*" in patterns:
        resource_hit: bool | None = True
    elif call.resource is None or any("${" in p for p in patterns):
        resource_hit = None
    else:
        hit = any(_glob(p).fullmatch(call.resource) for p in patterns)
        resource_hit = hit if "Resource" in statement else not hit
    if resource_hit is False:
        return False
    conditions = _all(
        _condition(operator, key, [str(v) for v in as_list(expected)], call)
        for operator, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )
    return _all([resource_hit, conditions])


def sid(statement: Statement, index: int) -> str:
    return str(statement.get("Sid") or f"#{index}")


@dataclass(frozen=True)
class Decision:
    call: Call
    allowed_by: tuple[str, ...]  # the Sids of the Allow statements that cover the call
    denied_by: tuple[str, ...] = ()
    undecided: tuple[str, ...] = ()  # Allow statements this module could not decide

    @property
    def allowed(self) -> bool:
        return bool(self.allowed_by) and not self.denied_by

    def reason(self) -> str:
        if self.denied_by:
            return f"denied by {', '.join(self.denied_by)}"
        if self.call.resource is None:
            return "a request the local run does not model (local/iam.py)"
        if self.undecided:
            return f"no statement allows it ({', '.join(self.undecided)}: a condition the local run cannot decide)"
        return "no statement allows it"


def evaluate(statements: list[Statement], call: Call) -> Decision:
    allowed, denied, undecided = [], [], []
    for index, statement in enumerate(statements):
        result = applies(statement, call)
        if result is False:
            continue
        name = sid(statement, index)
        if statement.get("Effect") == "Deny":
            denied.append(name)  # undecided counts too: stricter, never more lenient
        elif result:
            allowed.append(name)
        else:
            undecided.append(name)
    return Decision(call, tuple(allowed), tuple(denied), tuple(undecided))


# --- the roles, from template.yaml --------------------------------------------------------------
class _Names(dict[str, str]):
    """Physical names for !Ref and !GetAtt where no stack was provisioned: the logical id itself."""

    def __missing__(self, key: str) -> str:
        return key


def _inline_only(fn: tpl.Function) -> bool:
    return "Role" not in fn.properties and all(
        isinstance(policy, dict) and set(policy) <= {"Version", "Statement"}
        for policy in fn.properties.get("Policies", [])
    )


@functools.cache
def _translated(template_json: str) -> dict[str, Any]:
    """The template as SAM translates it (slow to import: only for what is not inline)."""
    from samtranslator.translator.transform import transform  # noqa: PLC0415

    template = json.loads(template_json)
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):  # the translator wants artifacts in S3, as packaged
            if isinstance(properties.get(key), str):
                properties[key] = "s3://local-artifacts/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # its pseudo parameters' region

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    return dict(transform(template, {}, NoManagedPolicies()))


def translated_role_statements(template: dict[str, Any], logical_id: str) -> list[Statement]:
    """The function's role as SAM's translator builds it: its inline policies, and the template's
    AWS::IAM::Policy resources attached to it (managed policies are not evaluated here)."""
    translated = _translated(json.dumps(template, sort_keys=True))
    resources = translated["Resources"]
    role_ref = resources[logical_id]["Properties"]["Role"]
    role_id = role_ref["Fn::GetAtt"][0] if isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref else None
    if role_id is None or role_id not in resources:
        return []  # a role from outside the template: nothing to evaluate, so nothing is allowed
    documents = [policy["PolicyDocument"] for policy in resources[role_id]["Properties"].get("Policies", [])]
    documents += [
        resource["Properties"]["PolicyDocument"]
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", [])
    ]
    return [statement for document in documents for statement in as_list(document.get("Statement", []))]


def role_statements(template: dict[str, Any], logical_id: str) -> list[Statement]:
    """The function's role's statements, intrinsics unresolved."""
    fn = tpl.functions(template)[logical_id]
    if _inline_only(fn):
        return copy.deepcopy(tpl.policy_statements(fn))
    return translated_role_statements(template, logical_id)


def statements(template: dict[str, Any], logical_id: str, refs: Mapping[str, str] | None = None) -> list[Statement]:
    """The function's statements with intrinsics resolved (by ``refs``, else by logical id)."""
    names = _Names({"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", **(refs or {})})
    return [tpl.resolve(statement, names) for statement in role_statements(template, logical_id)]


def allowed(template: dict[str, Any], logical_id: str, call: Call, refs: Mapping[str, str] | None = None) -> bool:
    return evaluate(statements(template, logical_id, refs), call).allowed


# --- botocore requests as IAM requests ----------------------------------------------------------
_PLACEHOLDER = re.compile(r":[A-Za-z0-9_]+")
_PATH_ROOT = re.compile(r"(#?[A-Za-z_][A-Za-z0-9_]*)(?:\.#?[A-Za-z0-9_]+|\[\d+\])*")
_EXPRESSION_WORDS = {
    "set",
    "remove",
    "add",
    "delete",
    "and",
    "or",
    "not",
    "between",
    "in",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
    "list_append",
}


_STREAM_OPERATIONS = {"DescribeStream", "GetShardIterator", "GetRecords", "ListStreams"}


def _attribute_value(value: dict[str, Any]) -> str:
    ((_, raw),) = value.items()
    return base64.b64encode(raw).decode() if isinstance(raw, bytes) else str(raw)


def _expression_attributes(expression: str, names: Mapping[str, str]) -> set[str]:
    """The top-level attribute names an expression names (placeholders resolved)."""
    found = set()
    for match in _PATH_ROOT.finditer(_PLACEHOLDER.sub(" ", expression)):
        root = match.group(1)
        if root.lower() in _EXPRESSION_WORDS:
            continue
        found.add(names.get(root, root) if root.startswith("#") else root)
    return found


@dataclass(frozen=True)
class RequestContext:
    """Turns a serialized botocore request into the ``Call``s IAM evaluates for it."""

    region: str
    account: str
    # Partition-key attribute by table name (dynamodb:LeadingKeys).
    partition_keys: Mapping[str, str] = field(default_factory=dict)

    def calls(self, model: Any, params: Mapping[str, Any]) -> list[Call]:
        service = model.service_model
        prefix = service.signing_name or service.endpoint_prefix
        action = f"{prefix}:{model.name}"
        action = ACTION_NAMES.get(action, action)
        body = params.get("body")
        # JSON protocols send a serialized body; query protocols a dict of parameters.
        request = dict(body or {}) if isinstance(body, Mapping) else json.loads(body or "{}")
        handler = getattr(self, f"_{prefix}", None)
        found = handler(model.name, request) if handler else [(None, {}, set())]
        globals_ = {
            "aws:RequestedRegion": [self.region],
            "aws:PrincipalAccount": [self.account],
            "aws:PrincipalType": ["AssumedRole"],
            "aws:SecureTransport": ["true"],
        }
        return [
            Call(action, resource, {**globals_, **context}, frozenset({*GLOBAL_KEYS, *known}))
            for resource, context, known in found
        ]

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def _dynamodb(self, operation: str, request: dict[str, Any]) -> list[tuple[str | None, Context, set[str]]]:
        if operation in _STREAM_OPERATIONS:  # DynamoDB Streams signs as dynamodb too
            # A shard iterator starts with its stream's ARN (in DynamoDB as in moto); ListStreams
            # names no stream: not modelled.
            arn = str(request.get("StreamArn") or str(request.get("ShardIterator", "")).split("|")[0])
            return [(arn if arn.startswith("arn:") and "/stream/" in arn else None, {}, set())]
        table = str(request.get("TableName", ""))
        if not table or operation in {"BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems"}:
            return [(None, {}, set())]  # several items or tables in one request: not modelled
        resource = table if table.startswith("arn:") else self._arn("dynamodb", f"table/{table}")
        context: Context = {}
        known = {"dynamodb:ReturnValues", "dynamodb:ReturnConsumedCapacity", "dynamodb:Select"}
        for option in ("ReturnValues", "ReturnConsumedCapacity", "Select"):
            if option in request:
                context[f"dynamodb:{option}"] = [str(request[option])]
        if "IndexName" in request:
            resource += f"/index/{request['IndexName']}"
        item, key = request.get("Item"), request.get("Key")
        record = item if item is not None else key
        partition_key = self.partition_keys.get(table.rsplit("/", 1)[-1])
        if record is not None and partition_key in record:
            context["dynamodb:LeadingKeys"] = [_attribute_value(record[partition_key])]
            known.add("dynamodb:LeadingKeys")
        names = request.get("ExpressionAttributeNames", {})
        if item is not None:
            context["dynamodb:Attributes"] = sorted(item)
            known.add("dynamodb:Attributes")
        elif key is not None and operation in {"UpdateItem", "DeleteItem"} and "AttributeUpdates" not in request:
            attributes = set(key)
            for expression in ("UpdateExpression", "ConditionExpression", "ProjectionExpression"):
                attributes |= _expression_attributes(str(request.get(expression, "")), names)
            context["dynamodb:Attributes"] = sorted(attributes)
            known.add("dynamodb:Attributes")
        return [(resource, context, known)]

    def _kms(self, operation: str, request: dict[str, Any]) -> list[tuple[str | None, Context, set[str]]]:
        key_id = str(request.get("KeyId", ""))
        if key_id.startswith("arn:") and ":key/" in key_id:
            resource: str | None = key_id
        elif re.fullmatch(r"[0-9a-f-]{36}", key_id):
            resource = self._arn("kms", f"key/{key_id}")
        else:
            resource = None  # an alias, or a ciphertext naming its own key: not modelled
        encryption_context = request.get("EncryptionContext") or {}
        context: Context = {f"kms:EncryptionContext:{k}": [str(v)] for k, v in encryption_context.items()}
        if encryption_context:
            context["kms:EncryptionContextKeys"] = sorted(encryption_context)
        context["kms:CallerAccount"] = [self.account]
        known = {"kms:EncryptionContext:*", "kms:EncryptionContextKeys", "kms:CallerAccount", "kms:ViaService"}
        return [(resource, context, known)]

    def _events(self, operation: str, request: dict[str, Any]) -> list[tuple[str | None, Context, set[str]]]:
        known = {"events:source", "events:detail-type"}
        return [
            (
                self._bus(str(entry.get("EventBusName") or "default")),
                {"events:source": [str(entry.get("Source"))], "events:detail-type": [str(entry.get("DetailType"))]},
                known,
            )
            for entry in request.get("Entries", [{}])
        ]

    def _bus(self, name: str) -> str:
        return name if name.startswith("arn:") else self._arn("events", f"event-bus/{name}")

    def _sqs(self, operation: str, request: dict[str, Any]) -> list[tuple[str | None, Context, set[str]]]:
        # https://sqs.<region>.amazonaws.com/<account>/<name> (moto: http://host:port/<account>/<name>)
        found = re.fullmatch(r"https?://[^/]+/(\d{12})/([A-Za-z0-9_.-]+)", str(request.get("QueueUrl", "")))
        if not found:
            return [(None, {}, set())]
        return [(f"arn:aws:sqs:{self.region}:{found[1]}:{found[2]}", {}, set())]

    def _secretsmanager(self, operation: str, request: dict[str, Any]) -> list[tuple[str | None, Context, set[str]]]:
        secret = str(request.get("SecretId", ""))
        context: Context = {"secretsmanager:SecretId": [secret]}
        for option in ("VersionStage", "VersionId"):
            if option in request:
                context[f"secretsmanager:{option}"] = [str(request[option])]
        known = {"secretsmanager:SecretId", "secretsmanager:VersionStage", "secretsmanager:VersionId"}
        # By name the ARN (its random suffix) is unknown: the name resolves only in AWS.
        return [(secret if secret.startswith("arn:") else None, context, known)]


# --- enforcement --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    function: str
    action: str
    resource: str | None
    context: Context
    reason: str

    def describe(self) -> str:
        context = {k: v for k, v in self.context.items() if not k.startswith("aws:")}
        return (
            f"{self.function}: {self.action} on {self.resource or '?'} "
            f"{json.dumps(context, sort_keys=True)} ({self.reason})"
        )


class Enforcer:
    """Evaluates every request of the sessions it is registered on against one function's
    statements; a refused request never leaves: the client raises AWS's error for it."""

    def __init__(
        self,
        function: str,
        statements: list[Statement],
        requests: RequestContext,
        *,
        on_refusal: Callable[[Refusal], None] | None = None,
        keep: bool = False,
    ) -> None:
        self.function = function
        self.statements = statements
        self.requests = requests
        self.on_refusal = on_refusal
        self.keep = keep  # keep every decision (tests); a long-running worker keeps none
        self.decisions: list[Decision] = []
        self.refused = 0
        self._lock = threading.Lock()

    def register(self, events: Any) -> None:
        """On a botocore session's (or client's) event emitter; clients copy their session's."""
        events.register("before-call", self.before_call, unique_id=f"local-iam-{id(self)}")

    def before_call(self, model: Any, params: Mapping[str, Any], **_: Any) -> Any:
        for call in self.requests.calls(model, params):
            decision = evaluate(self.statements, call)
            with self._lock:
                if self.keep:
                    self.decisions.append(decision)
                if decision.allowed:
                    continue
                self.refused += 1
            refusal = Refusal(self.function, call.action, call.resource, call.context, decision.reason())
            if self.on_refusal is not None:
                self.on_refusal(refusal)
            return self._denied(model.service_model.endpoint_prefix, call)
        return None

    def _denied(self, prefix: str, call: Call) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse  # noqa: PLC0415 (loaded with boto3)
        from botocore.compat import HTTPHeaders  # noqa: PLC0415

        code, status = DENIED.get(prefix, DENIED_DEFAULT)
        principal = f"arn:aws:sts::{self.requests.account}:assumed-role/{self.function}Role/{self.function}"
        message = (
            f"User: {principal} is not authorized to perform: {call.action} on resource: {call.resource or '*'} "
            f"because no identity-based policy allows the {call.action} action"
        )
        response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
        }
        return AWSResponse("", status, HTTPHeaders(), None), response


# --- what the local run hands each worker -------------------------------------------------------
def partition_keys(template: dict[str, Any], refs: Mapping[str, str]) -> dict[str, str]:
    """The partition-key attribute of each of the template's tables, by physical name."""
    keys = {}
    for logical_id, table in tpl.resources_of_type(template, "AWS::DynamoDB::Table").items():
        schema = table["Properties"]["KeySchema"]
        keys[str(refs.get(logical_id, logical_id))] = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
    return keys


def worker_setup(template: dict[str, Any], logical_id: str, refs: Mapping[str, str]) -> dict[str, Any]:
    """What a worker process needs to enforce its function's role (JSON)."""
    return {
        "function": logical_id,
        "statements": statements(template, logical_id, refs),
        "region": refs["AWS::Region"],
        "account": refs["AWS::AccountId"],
        "partition_keys": partition_keys(template, refs),
    }


def enforcer_from_setup(setup: Mapping[str, Any], on_refusal: Callable[[Refusal], None] | None) -> Enforcer:
    requests = RequestContext(setup["region"], setup["account"], setup["partition_keys"])
    return Enforcer(setup["function"], setup["statements"], requests, on_refusal=on_refusal)


def enforce_in_every_session(enforcer: Enforcer) -> None:
    """Register the enforcer on every botocore session this process creates from now on (the
    handler's own, Powertools', any other), so no client of the function escapes it."""
    import botocore.session  # noqa: PLC0415 (the worker loads it with boto3 first)

    original = botocore.session.Session.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        enforcer.register(self)

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]
