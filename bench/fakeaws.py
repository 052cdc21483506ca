"""An in-memory AWS for figure 3's emulator-free variant: every AWS call a botocore client makes
is answered by a botocore ``before-call`` handler from Python dicts, with no HTTP and no emulator
process, so that the run measures the broker's own pipeline.

It answers what the refresh path calls, with the semantics the store relies on: DynamoDB
GetItem, PutItem, UpdateItem, DeleteItem, BatchWriteItem, Query and Scan, evaluating
ConditionExpression, KeyConditionExpression, FilterExpression and the SET/REMOVE update
expressions (if_not_exists, +, -, attribute_exists, attribute_not_exists, begins_with,
comparisons, AND/OR/NOT) against items held in DynamoDB's own attribute-value shape; KMS Encrypt
and Decrypt with the encryption context checked; Secrets Manager GetSecretValue; SQS
SendMessageBatch, ReceiveMessage (long polling waits without CPU), DeleteMessageBatch and
GetQueueAttributes; EventBridge PutEvents. Anything else fails loudly.

Each answer can wait a simulated network latency first (``time.sleep``: no CPU, as a real
round trip). moto's in-process backend (``mock_aws``) was measured for this and rejected: it
costs ~65 ms of this process's CPU per refresh (mostly evaluating the two UpdateItems), more
than moto's server costs the machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import botocore.session
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

Item = dict[str, dict[str, Any]]  # attribute name -> attribute value, as botocore parses it


class _Response:
    """The part of an HTTP response botocore reads when a ``before-call`` handler answers."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}
        self.content = b""


def _error(code: str, message: str, **extra: Any) -> tuple[_Response, dict[str, Any]]:
    return _Response(400), {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}, **extra}


def _blobs(value: Any) -> Any:
    """Wire JSON to botocore's parsed shape: binary attribute values become bytes."""
    if isinstance(value, dict):
        return {k: (base64.b64decode(v) if k == "B" else _blobs(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_blobs(v) for v in value]
    return value


def _scalar(value: dict[str, Any] | None) -> Any:
    """A comparable Python value of an attribute value (None when the attribute is missing)."""
    if value is None:
        return None
    (kind, raw), *_ = value.items()
    return Decimal(raw) if kind == "N" else raw


# --- expressions ----------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(<>|<=|>=|[()=<>,+-]|[#:]?[A-Za-z_][A-Za-z0-9_]*)")
_COMPARE = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _tokens(expression: str) -> list[str]:
    tokens, pos = [], 0
    expression = expression.rstrip()
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if not match:
            raise ValueError(f"cannot parse {expression[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Expression:
    """A recursive-descent reader of one expression, evaluated against one item as it reads."""

    def __init__(self, expression: str, names: dict[str, str], values: Item, item: Item) -> None:
        self.tokens = _tokens(expression)
        self.pos = 0
        self.names, self.values, self.item = names, values, item

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.tokens[self.pos]
        if expected is not None and token.upper() != expected:
            raise ValueError(f"expected {expected}, found {token!r}")
        self.pos += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.upper() in words

    # conditions
    def condition(self) -> bool:
        result = self.conjunction()
        while self.at_keyword("OR"):
            self.take()
            result = self.conjunction() or result
        return result

    def conjunction(self) -> bool:
        result = self.negation()
        while self.at_keyword("AND"):
            self.take()
            result = self.negation() and result
        return result

    def negation(self) -> bool:
        if self.at_keyword("NOT"):
            self.take()
            return not self.negation()
        if self.peek() == "(":
            self.take()
            result = self.condition()
            self.take(")")
            return result
        if self.at_keyword("ATTRIBUTE_EXISTS", "ATTRIBUTE_NOT_EXISTS", "BEGINS_WITH"):
            function = self.take().upper()
            self.take("(")
            first = self.operand()
            if function != "BEGINS_WITH":
                self.take(")")
                return (first is not None) == (function == "ATTRIBUTE_EXISTS")
            self.take(",")
            whole, prefix = _scalar(first), _scalar(self.operand())
            self.take(")")
            return isinstance(whole, str) and isinstance(prefix, str) and whole.startswith(prefix)
        left = _scalar(self.operand())
        compare = _COMPARE[self.take()]
        right = _scalar(self.operand())
        return left is not None and right is not None and type(left) is type(right) and compare(left, right)

    # operands and update values
    def name(self) -> str:
        token = self.take()
        return self.names[token] if token.startswith("#") else token

    def operand(self) -> dict[str, Any] | None:
        if self.peek() and self.peek().startswith(":"):  # type: ignore[union-attr]
            return self.values[self.take()]
        if self.at_keyword("IF_NOT_EXISTS"):
            self.take()
            self.take("(")
            current = self.item.get(self.name())
            self.take(",")
            fallback = self.value()
            self.take(")")
            return current if current is not None else fallback
        return self.item.get(self.name())

    def value(self) -> dict[str, Any] | None:
        result = self.operand()
        while self.peek() in ("+", "-"):
            sign = 1 if self.take() == "+" else -1
            other = self.operand()
            if result is None or other is None:
                raise ValueError("an operand of + or - is missing")
            result = {"N": str(Decimal(result["N"]) + sign * Decimal(other["N"]))}
        return result

    def update(self) -> Item:
        """SET and REMOVE clauses, every value read from the item as it was."""
        new = dict(self.item)
        while self.peek() is not None:
            clause = self.take().upper()
            while True:
                name = self.name()
                if clause == "SET":
                    self.take("=")
                    new[name] = self.value()  # type: ignore[assignment]
                elif clause == "REMOVE":
                    new.pop(name, None)
                else:
                    raise ValueError(f"unsupported update clause {clause}")
                if self.peek() != ",":
                    break
                self.take()
        return new


def _holds(expression: str | None, request: dict[str, Any], item: Item) -> bool:
    if not expression:
        return True
    names = request.get("ExpressionAttributeNames", {})
    return _Expression(expression, names, request.get("ExpressionAttributeValues", {}), item).condition()


def _project(item: Item, request: dict[str, Any]) -> Item:
    projection = request.get("ProjectionExpression")
    if not projection:
        return dict(item)  # a copy: boto3 rewrites the answer's attribute values in place
    names = request.get("ExpressionAttributeNames", {})
    wanted = [names.get(p.strip(), p.strip()) for p in projection.split(",")]
    return {k: item[k] for k in wanted if k in item}


# --- services -------------------------------------------------------------------------------------
class _Table:
    def __init__(self, key: str, indexes: dict[str, tuple[str, str]]) -> None:
        self.key = key
        self.indexes = indexes
        self.items: dict[str, Item] = {}


class FakeAws:
    """The stack's resources in memory, named as on the real stack (``refs``)."""

    def __init__(self, refs: dict[str, str], template_table: dict[str, Any], secret_string: str, queue_arn: str):
        self.latency = 0.0  # seconds slept before each answer
        self.lock = threading.Lock()
        self.secret_string = secret_string
        self.queue_arn = queue_arn
        self.key_arn = refs["TokenKey.Arn"]
        indexes = {
            gsi["IndexName"]: tuple(k["AttributeName"] for k in gsi["KeySchema"])
            for gsi in template_table.get("GlobalSecondaryIndexes", [])
        }
        self.tables = {refs["ConnectionsTable"]: _Table(template_table["KeySchema"][0]["AttributeName"], indexes)}
        self.queue: list[dict[str, Any]] = []
        self.arrived = threading.Condition(self.lock)

    # botocore's hook
    def before_call(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[_Response, dict[str, Any]]:
        if self.latency:
            time.sleep(self.latency)
        request = json.loads(params["body"] or b"{}")
        service = model.service_model.service_name
        if service == "dynamodb":
            request = _blobs(request)
        handler = getattr(self, f"{service}_{model.name}", None)
        if handler is None:
            raise NotImplementedError(f"the in-memory AWS does not answer {service}:{model.name}")
        answer = handler(request)
        if isinstance(answer, tuple):
            return answer
        answer.setdefault("ResponseMetadata", {"HTTPStatusCode": 200})
        return _Response(200), answer

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Every botocore client created meanwhile is answered from here (clients created before
        keep talking to where they were pointed)."""
        original = botocore.session.Session.create_client
        fake = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-call", fake.before_call)  # type: ignore[arg-type]  # it answers: not None
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign, assignment]
        DEFAULT_PROVIDERS.clear()  # Powertools' cached client for the secret
        parameters.clear_caches()
        try:
            yield
        finally:
            botocore.session.Session.create_client = original  # type: ignore[method-assign]
            DEFAULT_PROVIDERS.clear()
            parameters.clear_caches()

    # DynamoDB
    def _key(self, request: dict[str, Any], item: Item | None = None) -> tuple[_Table, str]:
        table = self.tables[request["TableName"]]
        return table, _scalar((item or request["Key"])[table.key])

    def _write(self, request: dict[str, Any], old: Item | None, new: Item | None) -> Any:
        """A conditional write: ``new`` replaces ``old`` when the condition holds of ``old``."""
        if not _holds(request.get("ConditionExpression"), request, old or {}):
            extra = {"Item": old} if old and request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else {}
            return _error("ConditionalCheckFailedException", "The conditional request failed", **extra)
        returns = request.get("ReturnValues", "NONE")
        chosen = {"ALL_NEW": new, "ALL_OLD": old}.get(returns)
        return {"Attributes": dict(chosen)} if chosen else {}  # a copy, as in _project

    def dynamodb_GetItem(self, request: dict[str, Any]) -> Any:
        table, key = self._key(request)
        with self.lock:
            item = table.items.get(key)
        return {"Item": _project(item, request)} if item else {}

    def dynamodb_PutItem(self, request: dict[str, Any]) -> Any:
        table, key = self._key(request, request["Item"])
        with self.lock:
            old = table.items.get(key)
            answer = self._write(request, old, request["Item"])
            if not isinstance(answer, tuple):
                table.items[key] = request["Item"]
        return answer

    def dynamodb_UpdateItem(self, request: dict[str, Any]) -> Any:
        table, key = self._key(request)
        with self.lock:
            old = table.items.get(key)
            base = old or dict(request["Key"])
            names, values = request.get("ExpressionAttributeNames", {}), request.get("ExpressionAttributeValues", {})
            new = _Expression(request["UpdateExpression"], names, values, base).update()
            answer = self._write(request, old, new)
            if not isinstance(answer, tuple):
                table.items[key] = new
        return answer

    def dynamodb_DeleteItem(self, request: dict[str, Any]) -> Any:
        table, key = self._key(request)
        with self.lock:
            old = table.items.get(key)
            answer = self._write(request, old, None)
            if not isinstance(answer, tuple):
                table.items.pop(key, None)
        return answer

    def dynamodb_BatchWriteItem(self, request: dict[str, Any]) -> Any:
        with self.lock:
            for name, writes in request["RequestItems"].items():
                table = self.tables[name]
                for write in writes:
                    if "PutRequest" in write:
                        item = write["PutRequest"]["Item"]
                        table.items[_scalar(item[table.key])] = item
                    else:
                        table.items.pop(_scalar(write["DeleteRequest"]["Key"][table.key]), None)
        return {"UnprocessedItems": {}}

    def _read(self, request: dict[str, Any], candidates: list[Item], sort_key: tuple[str, ...]) -> dict[str, Any]:
        """One page of a Query or Scan: Limit counts items read, the filter applies after it."""
        candidates.sort(key=lambda item: tuple(_scalar(item.get(k)) for k in sort_key))
        start = request.get("ExclusiveStartKey")
        if start:
            after = tuple(_scalar(start.get(k)) for k in sort_key)
            candidates = [c for c in candidates if tuple(_scalar(c.get(k)) for k in sort_key) > after]
        limit = request.get("Limit")
        page = candidates[:limit] if limit else candidates
        matched = [_project(i, request) for i in page if _holds(request.get("FilterExpression"), request, i)]
        answer: dict[str, Any] = {"Count": len(matched), "ScannedCount": len(page)}
        if request.get("Select") != "COUNT":
            answer["Items"] = matched
        if limit and len(candidates) > limit:
            answer["LastEvaluatedKey"] = {k: page[-1][k] for k in sort_key}
        return answer

    def dynamodb_Query(self, request: dict[str, Any]) -> Any:
        table = self.tables[request["TableName"]]
        index = table.indexes[request["IndexName"]] if "IndexName" in request else (table.key,)
        key_request = {**request, "ExpressionAttributeNames": request.get("ExpressionAttributeNames", {})}
        with self.lock:
            items = [i for i in table.items.values() if all(k in i for k in index)]
            candidates = [i for i in items if _holds(request["KeyConditionExpression"], key_request, i)]
        return self._read(request, candidates, (*index[1:], table.key))

    def dynamodb_Scan(self, request: dict[str, Any]) -> Any:
        table = self.tables[request["TableName"]]
        with self.lock:
            candidates = list(table.items.values())
        return self._read(request, candidates, (table.key,))

    # KMS: the ciphertext names its key and context; Decrypt checks both, as KMS does
    def kms_Encrypt(self, request: dict[str, Any]) -> Any:
        envelope = {
            "key": self.key_arn,
            "context": request.get("EncryptionContext", {}),
            "plaintext": request["Plaintext"],  # base64 on the wire
        }
        return {"CiphertextBlob": b"fake-kms:" + json.dumps(envelope).encode(), "KeyId": self.key_arn}

    def kms_Decrypt(self, request: dict[str, Any]) -> Any:
        blob = base64.b64decode(request["CiphertextBlob"])
        if not blob.startswith(b"fake-kms:"):
            return _error("InvalidCiphertextException", "not a ciphertext of this key")
        envelope = json.loads(blob[len(b"fake-kms:") :])
        if envelope["context"] != request.get("EncryptionContext", {}):
            return _error("InvalidCiphertextException", "the encryption context does not match")
        return {"Plaintext": base64.b64decode(envelope["plaintext"]), "KeyId": envelope["key"]}

    # Secrets Manager
    def secretsmanager_GetSecretValue(self, request: dict[str, Any]) -> Any:
        return {
            "ARN": request["SecretId"],
            "Name": request["SecretId"],
            "SecretString": self.secret_string,
            "VersionId": "1",
            "VersionStages": ["AWSCURRENT"],
        }

    # SQS: one queue; a received message stays in flight (the run counts failures, never redelivers)
    def sqs_SendMessageBatch(self, request: dict[str, Any]) -> Any:
        sent = []
        with self.lock:
            for entry in request["Entries"]:
                message_id = str(uuid.uuid4())
                self.queue.append(
                    {
                        "MessageId": message_id,
                        "ReceiptHandle": message_id,
                        "Body": entry["MessageBody"],
                        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
                    }
                )
                sent.append({"Id": entry["Id"], "MessageId": message_id, "MD5OfMessageBody": ""})
            self.arrived.notify_all()
        return {"Successful": sent, "Failed": []}

    def sqs_ReceiveMessage(self, request: dict[str, Any]) -> Any:
        deadline = time.monotonic() + request.get("WaitTimeSeconds", 0)
        with self.arrived:
            while not self.queue and time.monotonic() < deadline:
                self.arrived.wait(deadline - time.monotonic())
            count = request.get("MaxNumberOfMessages", 1)
            messages, self.queue = self.queue[:count], self.queue[count:]
        return {"Messages": messages} if messages else {}

    def sqs_DeleteMessageBatch(self, request: dict[str, Any]) -> Any:
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    def sqs_GetQueueAttributes(self, request: dict[str, Any]) -> Any:
        return {"Attributes": {"QueueArn": self.queue_arn}}

    # EventBridge
    def events_PutEvents(self, request: dict[str, Any]) -> Any:
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(uuid.uuid4())} for _ in request["Entries"]]}
