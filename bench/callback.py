"""Figure 2: a warm callback through the real handler, against moto's server and a token
endpoint that answers at once. Wall time, our own CPU time (this thread's: moto and the fake
Apicbase run in other processes), every AWS and HTTP call it makes, and the CPU of the same
calls made bare, interleaved, to tell the SDK's and HTTP stack's share from ours."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import requests

from . import harness as h
from .harness import CallCounter, Stack

WARMUP = 3
# The least the flow can do: consume the state, exchange the code, ask whose token it is (the
# username, which the issue wants recorded), encrypt the pair, write the connection.
MINIMUM = Counter(
    {
        ("dynamodb", "DeleteItem"): 1,
        ("http", "token"): 1,
        ("http", "introspect"): 1,
        ("kms", "Encrypt"): 1,
        ("dynamodb", "UpdateItem"): 1,
    }
)
# Calls beyond the minimum, and why the flow makes them.
EXTRA_REASONS = {
    ("dynamodb", "UpdateItem"): "the username is written after the grant is stored, so that a slow "
    "introspection cannot outlast the function while the fresh refresh token is only in memory",
    ("events", "PutEvents"): "the Connection Created event for the integrator",
}


@dataclass
class CallbackFigures:
    wall: list[float]
    cpu: list[float]
    calls: Counter[tuple[str, str]]  # per callback
    new_connections: float  # new TCP connections to Apicbase per callback
    count: int
    bare_cpu: list[float]  # the same calls made bare, measured alongside


def _bare_calls(stack: Stack) -> Callable[[], None]:
    """The callback's calls (as counted: the minimum, a second write for the username and the
    connection event) without the broker around them: plain botocore clients and a
    requests.Session, the same services and endpoints. What is left above this is ours."""
    session = stack.session
    dynamodb, kms, events = session.client("dynamodb"), session.client("kms"), session.client("events")
    http = requests.Session()
    table, key, base = stack.refs["ConnectionsTable"], stack.refs["TokenKey.Arn"], stack.stub.url
    credentials = {"client_id": h.CLIENT_ID, "client_secret": h.CLIENT_SECRET}

    def calls() -> None:
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": "STATE#bare"}}, ReturnValues="ALL_OLD")
        token = {"grant_type": "authorization_code", "code": "code-" + uuid.uuid4().hex, **credentials}
        http.post(base + "/oauth/token/", data=token, timeout=10).json()
        http.post(base + "/oauth/introspect/", data={"token": "bare", **credentials}, timeout=10).json()
        kms.encrypt(KeyId=key, Plaintext=b"x" * 64, EncryptionContext={"connection_id": "bare"})
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "CONN#bare"}},
            UpdateExpression="SET tokens = :t, expires_at = :e",
            ExpressionAttributeValues={":t": {"B": b"x" * 200}, ":e": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": "CONN#bare"}},
            UpdateExpression="SET username = :u",
            ExpressionAttributeValues={":u": {"S": "chef@example.com"}},
            ReturnValues="ALL_NEW",
        )
        events.put_events(Entries=[{"Source": "bench", "DetailType": "bare", "Detail": "{}"}])

    return calls


def run(stack: Stack, counter: CallCounter, count: int) -> CallbackFigures:
    with h.quiet_stdout():
        module = h.load_handler(stack, "CallbackFunction")
        context = h.lambda_context("CallbackFunction")
        for _ in range(WARMUP):  # clients connected, secret cached: the warm path
            module.lambda_handler(h.callback_event(stack), context)
        bare = _bare_calls(stack)
        bare()  # connect, as the warm callback has
        counter.reset()
        before = stack.stub.stats()
        wall, cpu, bare_cpu = [], [], []
        for _ in range(count):
            c = time.thread_time()
            bare()
            bare_cpu.append(time.thread_time() - c)
            event = h.callback_event(stack)
            with counter.scope("callback"):
                t, c = time.perf_counter(), time.thread_time()
                answer = module.lambda_handler(event, context)
                cpu.append(time.thread_time() - c)
                wall.append(time.perf_counter() - t)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"callback answered {answer['statusCode']}")
        after = stack.stub.stats()
    calls = counter.of("callback")
    # The bare calls made one token request and one introspection each time.
    calls[("http", "token")] = after["token_requests"] - before["token_requests"] - count
    calls[("http", "introspect")] = after["introspections"] - before["introspections"] - count
    per_callback = Counter({k: v / count for k, v in calls.items()})
    return CallbackFigures(
        wall=wall,
        cpu=cpu,
        calls=per_callback,
        new_connections=(after["connections_opened"] - before["connections_opened"]) / count,
        count=count,
        bare_cpu=bare_cpu,
    )
