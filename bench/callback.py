"""Figure 2: a warm callback through the real handler, against moto's server and a token
endpoint that answers at once. Wall time, our own CPU time (this thread's: moto and the fake
Apicbase run in other processes), and every AWS and HTTP call it makes."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

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


@dataclass
class CallbackFigures:
    wall: list[float]
    cpu: list[float]
    calls: Counter[tuple[str, str]]  # per callback
    new_connections: float  # new TCP connections to Apicbase per callback
    count: int
    reference_cpu: list[float]  # one bare KMS Encrypt through botocore, for scale


def run(stack: Stack, counter: CallCounter, count: int) -> CallbackFigures:
    stack.stub.set_delay(0)
    with h.quiet_stdout():
        module = h.load_handler(stack, "CallbackFunction")
        context = h.lambda_context("CallbackFunction")
        for _ in range(WARMUP):  # clients connected, secret cached: the warm path
            module.lambda_handler(h.callback_event(stack), context)
        counter.reset()
        before = stack.stub.stats()
        kms, key = stack.session.client("kms"), stack.refs["TokenKey.Arn"]
        wall, cpu, reference = [], [], []
        for _ in range(count):
            c = time.thread_time()
            kms.encrypt(KeyId=key, Plaintext=b"x" * 64)
            reference.append(time.thread_time() - c)
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
    calls[("http", "token")] = after["token_requests"] - before["token_requests"]
    calls[("http", "introspect")] = after["introspections"] - before["introspections"]
    per_callback = Counter({k: v / count for k, v in calls.items()})
    return CallbackFigures(
        wall=wall,
        cpu=cpu,
        calls=per_callback,
        new_connections=(after["connections_opened"] - before["connections_opened"]) / count,
        count=count,
        reference_cpu=reference,
    )
