"""What every figure needs: moto's server and the fake Apicbase as separate processes, the stack
provisioned from template.yaml, the functions' environments, Lambda-shaped events, the handlers
loaded as Lambda loads them, and AWS calls counted with botocore ``before-call`` hooks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import boto3
import botocore.session
import requests

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "apicbase_oauth"
for _path in (str(ROOT), str(LAYER)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from local import adapter, scheduler  # noqa: E402
from local import aws as local_aws  # noqa: E402
from local import template as tpl  # noqa: E402
from local.lambda_context import LambdaContext  # noqa: E402
from local.stack import free_port  # noqa: E402

# Powertools' settings from the template's Globals, before the layer creates its Logger and Metrics.
_globals = tpl.load()["Globals"]["Function"]["Environment"]["Variables"]
os.environ.update(
    {k: str(tpl.resolve(v, tpl.parameter_defaults(tpl.load()))) for k, v in _globals.items() if "POWERTOOLS_" in k}
)

from apicbase_oauth.adapters.crypto import TokenCipher  # noqa: E402
from apicbase_oauth.adapters.sessions import SessionStore  # noqa: E402
from apicbase_oauth.edge import pages  # noqa: E402
from apicbase_oauth.model import ConnectSession, TokenPair  # noqa: E402

REGION = local_aws.REGION
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret-0123456789"  # a fake credential for the fake Apicbase
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
FAKE_CREDENTIALS |= {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
ONE_WEEK = 604800


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def _server(*args: str, probe: str) -> Iterator[str]:
    """``python -m ARGS -p PORT`` in its own process (its CPU is not ours), on a free port; yields its URL."""
    url, port = "", free_port()
    command = [sys.executable, "-m", *args, "-p", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        while not url:
            try:
                requests.get(f"http://127.0.0.1:{port}{probe}", timeout=1)
                url = f"http://127.0.0.1:{port}"
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} did not come up") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def moto_server() -> contextlib.AbstractContextManager[str]:
    return _server("moto.server", "-H", "127.0.0.1", probe="/moto-api/")


@dataclass
class Stub:
    """The fake Apicbase's control endpoints (``bench/stub.py``)."""

    url: str

    def call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = requests.post(f"{self.url}/stub/{path}", json=payload or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def pairs(self, count: int) -> list[TokenPair]:
        return [TokenPair(a, r) for a, r in self.call("pairs", {"count": count})["pairs"]]

    def stats(self) -> Counter[str]:
        return Counter(self.call("stats"))


@contextlib.contextmanager
def apicbase_stub() -> Iterator[Stub]:
    with _server("bench.stub", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, probe="/") as url:
        yield Stub(url)


@dataclass
class Stack:
    """The template's resources on moto (its server, or in this process), and what a function sees."""

    endpoint: str | None  # moto's server, or None for moto in this process
    stub: Stub
    template: dict[str, Any]
    refs: dict[str, str]
    session: boto3.session.Session

    @classmethod
    def provision(cls, endpoint: str | None, stub: Stub, name: str) -> Stack:
        template = tpl.load()
        session = aws_session(endpoint)
        refs = local_aws.provision(
            session,
            template,
            stack_name=name,
            applications={"default": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}},
            parameters={
                "ApicbaseTokenUrl": stub.url + "/oauth/token/",
                "ApicbaseIntrospectUrl": stub.url + "/oauth/introspect/",
                "ApicbaseApiUrl": stub.url + "/",  # the callback reads user_info there
                "CallbackUrlOverride": "https://broker.example.com/oauth/callback",
            },
        )
        return cls(endpoint, stub, template, refs, session)

    def env(self, logical_id: str) -> dict[str, str]:
        """The function's environment as Lambda sets it, pointed at moto's server."""
        env = {
            **local_aws.function_environment(self.template, logical_id, self.refs),
            **FAKE_CREDENTIALS,
            "AWS_LAMBDA_FUNCTION_NAME": logical_id,
        }
        if self.endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        return env

    @property
    def table(self) -> Any:
        return self.session.resource("dynamodb").Table(self.refs["ConnectionsTable"])

    @property
    def sessions(self) -> SessionStore:
        return SessionStore(self.table)

    @property
    def cipher(self) -> TokenCipher:
        return TokenCipher(self.session.client("kms"), self.refs["TokenKey.Arn"])

    def new_state(self, expected_username: str | None = None) -> tuple[str, str]:
        """A connect session whose connect_url a browser opened: its state and the binder cookie."""
        state, start_id, binder = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = ConnectSession(
            connection_id=f"lib-{uuid.uuid4().hex[:12]}",
            application="default",
            client_id=CLIENT_ID,
            scopes=("accounts", "library"),
            redirect_uri="https://broker.example.com/oauth/callback",
            return_url=None,
            code_verifier=None,
            expires_at=int(time.time()) + 600,
            expected_username=expected_username,
        )
        self.sessions.put(state, session, start_id=start_id, authorize_url="https://app.apicbase.test/?state=x")
        pending = self.sessions.take_start(start_id)
        assert pending is not None
        self.sessions.bind(pending.session_key, hashlib.sha256(binder.encode()).hexdigest())
        return state, binder

    def seed_connections(self, ids: list[str], *, expires_in: int) -> None:
        """Connections with real ciphertexts (KMS, several calls at a time) of pairs the stub
        knows, written in batches of 25 (the fast path: no lease, no events)."""
        cipher, now = TokenCipher(self.session.client("kms"), self.refs["TokenKey.Arn"]), int(time.time())
        with ThreadPoolExecutor(8) as pool:
            ciphertexts = list(pool.map(cipher.encrypt, ids, self.stub.pairs(len(ids))))
        with self.table.batch_writer() as batch:
            for connection_id, ciphertext in zip(ids, ciphertexts, strict=True):
                item = connection_item(connection_id, now=now, expires_at=now + expires_in)
                batch.put_item(Item={**item, "tokens": ciphertext})


def connection_item(connection_id: str, *, now: int, expires_at: int) -> dict[str, Any]:
    """An active connection item as the store writes it (tokens left to the caller)."""
    return {
        "pk": "CONN#" + connection_id,
        "entity": "connection",
        "connection_id": connection_id,
        "application": "default",
        "client_id": CLIENT_ID,
        "status": "active",
        "expires_at": expires_at,
        "refresh_queue": "due",
        "updated_at": now,
        "created_at": now,
        "version": 1,
        "consecutive_failures": 0,
        "source": "import",
        "granted_scope": "accounts library",
        "username": "chef@example.com",
    }


def aws_session(endpoint: str | None) -> boto3.session.Session:
    os.environ.update(FAKE_CREDENTIALS)
    if endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    else:  # moto in this process intercepts AWS's own URLs only
        os.environ.pop("AWS_ENDPOINT_URL", None)
    return boto3.session.Session(region_name=REGION)


class CallCounter:
    """Every AWS API call by (scope, service, operation), from ``before-call`` hooks registered on
    each client as it is created: calls made inside ``scope(name)`` are the measured ones, the rest
    the harness's. Query responses are kept (``ReturnConsumedCapacity`` asked for) to tell what a
    Query read."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.current = "harness"

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def install(self) -> None:
        original = botocore.session.Session.create_client
        counter = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-call", counter._before_call)
            client.meta.events.register("before-parameter-build.dynamodb.Query", _ask_consumed_capacity)
            client.meta.events.register("after-call.dynamodb.Query", counter._after_query)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]

    def _before_call(self, model: Any, **_: Any) -> None:
        self.calls[(self.current, model.service_model.service_name, model.name)] += 1

    def _after_query(self, parsed: dict[str, Any], **_: Any) -> None:
        self.queries.append((self.current, parsed))

    def of(self, scope: str) -> Counter[tuple[str, str]]:
        return Counter({(svc, op): n for (s, svc, op), n in self.calls.items() if s == scope})

    def reset(self) -> None:
        self.calls.clear()
        self.queries.clear()


def _ask_consumed_capacity(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("ReturnConsumedCapacity", "TOTAL")


DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def by_kind(calls: Counter[tuple[str, str]], per: float = 1.0) -> dict[str, float]:
    """DynamoDB reads and writes apart; every other service by name."""
    kinds: Counter[str] = Counter()
    for (service, operation), n in calls.items():
        if service != "dynamodb":
            kinds[service] += n
        else:
            kinds["dynamodb_write" if operation in DYNAMODB_WRITES else "dynamodb_read"] += n
    return {k: v / per for k, v in kinds.items()}


def describe_calls(calls: Counter[tuple[str, str]], per: float = 1.0) -> str:
    return ", ".join(f"{svc}:{op} {n / per:g}" for (svc, op), n in sorted(calls.items())) or "none"


# --- Lambda shapes -------------------------------------------------------------------------------
def lambda_context(logical_id: str) -> LambdaContext:
    return LambdaContext(logical_id, memory_limit_in_mb=256, timeout_seconds=60)


def http_event(
    template: dict[str, Any],
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    cookies: list[str] | None = None,
) -> dict:
    """The payload 2.0 event API Gateway sends for a request to one of the template's routes."""
    found = adapter.match(tpl.http_routes(template), method, path)
    if found is None:
        raise KeyError(f"no route for {method} {path}")
    route, path_parameters = found
    return adapter.build_event(
        route,
        path_parameters,
        method=method,
        raw_path=path,
        raw_query=urlencode(query or {}),
        headers=[("host", "broker.example.com"), ("user-agent", "bench"), *(("cookie", c) for c in cookies or [])],
        body=b"",
        source_ip="127.0.0.1",
    )


def callback_event(stack: Stack, expected_username: str | None = None) -> dict:
    """A redirect back from Apicbase, with a fresh code and the state of a new connect session,
    in the browser that opened its connect_url (the binder cookie)."""
    state, binder = stack.new_state(expected_username)
    query = {"code": "code-" + uuid.uuid4().hex, "state": state}
    return http_event(stack.template, "GET", "/oauth/callback", query, [f"{pages.BINDER_COOKIE}={binder}"])


def sqs_event(messages: list[dict[str, Any]], stack: Stack) -> dict:
    sqs = stack.session.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=stack.refs["RefreshQueue"], AttributeNames=["QueueArn"])
    return scheduler.sqs_event(messages, attributes["Attributes"]["QueueArn"], REGION)


def schedule_event() -> dict:
    return scheduler.scheduled_event(REGION, "bench")


def load_handler(stack: Stack, logical_id: str) -> ModuleType:
    """A fresh instance of the function's module (one container), imported with its environment."""
    os.environ.update(stack.env(logical_id))
    if not stack.endpoint:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    return tpl.functions(stack.template)[logical_id].import_module(f"bench_{logical_id}_{uuid.uuid4().hex[:8]}")


@dataclass
class Warm:
    """Invocations of one warm container: wall and CPU (this thread's) per invocation, calls in all."""

    count: int
    wall: list[float]
    cpu: list[float]
    calls: Counter[tuple[str, str]]


def warm_invocations(stack: Stack, counter: CallCounter, logical_id: str, events: Any, count: int) -> Warm:
    """Load the function, invoke it three times (clients built and connected, secret cached), then
    ``count`` times more, timed and counted; ``events()`` gives each invocation's event."""
    wall, cpu = [], []
    with quiet_stdout():
        module, context = load_handler(stack, logical_id), lambda_context(logical_id)
        for _ in range(3):
            module.lambda_handler(events(), context)
        counter.reset()
        for _ in range(count):
            event = events()
            with counter.scope(logical_id):
                started, clock = time.perf_counter(), time.thread_time()
                answer = module.lambda_handler(event, context)
                cpu.append(time.thread_time() - clock)
                wall.append(time.perf_counter() - started)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"{logical_id} answered {answer['statusCode']}: {answer.get('body')}")
    return Warm(count, wall, cpu, counter.of(logical_id))


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The handlers log to stdout as on Lambda (that work is measured); the lines go nowhere."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
