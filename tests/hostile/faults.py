"""Faults that take their time: the harness of the fault matrix.

A fault is injected where the network is, below the clients' own retries, so that every retry the
clients make runs as it would on AWS:
- AWS: at botocore's ``before-send`` (moto's stubber, wrapped): a read timeout, an unreachable
  endpoint (connect timeout), throttling, a 5xx, a write that lands and whose answer times out.
  botocore's own retry handler (the client's retry mode and ``max_attempts``) decides what is
  retried and how long it backs off; its jitter is pinned to its longest wait.
- Apicbase: at the client's ``requests`` session. A connect timeout is retried as the session's
  urllib3 ``Retry`` (its own object) says, with its backoff.
Time is a fake clock that advances by what each attempt costs (the client's connect or read
timeout, botocore's and urllib3's backoff sleeps, the broker's own sleeps). The Lambda's remaining
time follows the same clock, and a function that reaches its Timeout is killed (``ProcessKilled``
at whatever it was doing), as Lambda does.
"""

from __future__ import annotations

import base64
import contextvars
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import botocore.endpoint
import botocore.retryhandler
import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.retries import quota, standard
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse
from urllib3.exceptions import ConnectTimeoutError as SocketConnectTimeout
from urllib3.exceptions import MaxRetryError

from apicbase_oauth.config import LEASE_SECONDS
from tests.conftest import Clock

# AWS faults
READ_TIMEOUT = "read timeout"
LANDED = "read timeout after it landed"
UNREACHABLE = "unreachable (connect timeout)"
THROTTLED = "throttled"
SERVER_ERROR = "HTTP 500"
SLOW = "slow (answers just inside the read timeout)"
CONDITION_FAILED = "ConditionalCheckFailedException"
# Apicbase faults
CONNECT_TIMEOUT = "connect timeout"
APICBASE_READ_TIMEOUT = "read timeout, nothing done"
ANSWER_LOST = "read timeout after Apicbase answered"
APICBASE_SLOW = "answers just inside the read timeout"
HTTP_500 = "HTTP 500"
ODD_2XX = ("odd 2xx: no expires_in", "odd 2xx: expires_in 604800.0", "odd 2xx: token_type 'Bearer '")
UNUSABLE_ACCESS = "2xx: access token of 9,000 characters"
UNREADABLE_2XX = ("2xx: not JSON", "2xx: refresh token with a space")
# Both
KILLED = "killed right after"
LAPSED = "lease lapsed while holding"
MEANWHILE = "meanwhile"  # something else runs (another function's invocation) before the attempt goes on

SERVER_ERRORS = {
    "dynamodb": "InternalServerError",
    "kms": "KMSInternalException",
    "secrets-manager": "InternalServiceError",
    "eventbridge": "InternalException",
    "sqs": "InternalError",
}
DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})


class ProcessKilled(BaseException):
    """The process dies: no except clause of the broker runs (it catches Exception at most)."""


class LambdaClock(Clock):
    """The test clock. While a function runs (``deadline`` set), crossing its deadline kills it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        super().__init__(start)
        self.deadline: float | None = None
        self.deadline_kills = 0

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        if self.deadline is not None and self.value + seconds > self.deadline:
            self.value, self.deadline = self.deadline, None
            self.deadline_kills += 1
            raise ProcessKilled("the function reached its Timeout")
        self.value += seconds

    sleep = advance

    def jump(self, seconds: float) -> None:
        """The world's clock moves and the running function's with it (a host whose clock is
        skewed, or a pause): the function keeps the time it had left."""
        self.value += seconds
        if self.deadline is not None:
            self.deadline += seconds


@dataclass(frozen=True)
class Attempt:
    """One attempt on the network: an AWS request (each of botocore's retries is one) or an
    Apicbase request."""

    index: int  # in the run, AWS attempts and Apicbase requests counted together
    service: str  # botocore's service id (dynamodb, kms, secrets-manager, eventbridge, sqs) or apicbase
    operation: str  # e.g. "UpdateItem CONN# save", "PutItem RESCUE#", "SendMessage", "token"
    conditional: bool = False
    after_answer: bool = False  # Apicbase's token endpoint had answered the broker in this run
    try_number: int = 1  # which attempt of its call (botocore's amz-sdk-request header)

    @property
    def dynamodb_write(self) -> bool:
        return self.service == "dynamodb" and self.operation.split()[0] in DYNAMODB_WRITES

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}"


@dataclass(frozen=True)
class Fault:
    """``kind`` at the attempts ``matches`` selects. The first fault of a run that matches an
    attempt decides it."""

    kind: str
    matches: Callable[[Attempt], bool] = field(compare=False)
    label: str
    action: Callable[[], Any] | None = field(default=None, compare=False)

    @classmethod
    def at(cls, attempt: Attempt, kind: str, *, sticky: bool = False) -> Fault:
        """At one attempt of a clean run; ``sticky``: also every later attempt of its operation."""
        if sticky:
            label = f"#{attempt.index} {attempt} {kind} (for good)"
            return cls(kind, lambda a: a.index >= attempt.index and a.operation == attempt.operation, label)
        return cls(kind, lambda a: a.index == attempt.index, f"#{attempt.index} {attempt} {kind}")

    @classmethod
    def rule(cls, kind: str, label: str, matches: Callable[[Attempt], bool]) -> Fault:
        return cls(kind, matches, label)

    @classmethod
    def meanwhile(cls, label: str, matches: Callable[[Attempt], bool], action: Callable[[], Any]) -> Fault:
        """Before the first attempt ``matches`` selects goes on, ``action`` runs (unobserved, as
        another process would): a race, placed exactly."""
        done: list[bool] = []

        def first(attempt: Attempt) -> bool:
            if done or not matches(attempt):
                return False
            done.append(True)
            return True

        return cls(MEANWHILE, first, label, action)

    @classmethod
    def flaky(cls, kind: str, label: str, times: int, matches: Callable[[Attempt], bool]) -> Fault:
        """``kind`` at the first ``times`` attempts of each operation ``matches`` selects: an
        endpoint that fails that often, then answers (whichever client retries)."""
        seen: dict[str, int] = {}

        def first_ones(attempt: Attempt) -> bool:
            if not matches(attempt):
                return False
            seen[attempt.operation] = seen.get(attempt.operation, 0) + 1
            return seen[attempt.operation] <= times

        return cls(kind, first_ones, label)

    @property
    def sticky(self) -> bool:
        return self.label.endswith("(for good)")

    def __str__(self) -> str:
        return self.label


@dataclass
class Run:
    """What one run did: the attempts, what landed, what Apicbase carried out, how it ended."""

    attempts: list[Attempt] = field(default_factory=list)
    landed: list[Attempt] = field(default_factory=list)  # AWS writes that took effect
    fired: list[tuple[Attempt, Fault]] = field(default_factory=list)
    granted: int = 0  # token requests Apicbase carried out
    answered: bool = False  # a token answer reached the broker
    killed: str | None = None  # "fault" or "deadline"
    killed_after_grant_before_landing: bool = False

    def landed_any(self, *operations: str) -> bool:
        return any(a.operation in operations for a in self.landed)

    def fired_at(self, operation: str, *kinds: str) -> bool:
        return any(a.operation == operation and f.kind in kinds for a, f in self.fired)


def _label(service: str, operation: str, request: dict[str, Any]) -> str:
    if service != "dynamodb":
        return operation
    key = (request.get("Key") or request.get("Item") or {}).get("pk", {}).get("S", "")
    label = f"{operation} {key.split('#', 1)[0]}#" if "#" in key else operation
    expression = request.get("UpdateExpression", "")
    if "tokens = :tokens" in expression:
        label += " save"
    elif "lease_owner = :owner" in expression:
        label += " lease"
    return label


def _wire(value: Any) -> Any:
    """An item as DynamoDB sends it (binary values in base64)."""
    if isinstance(value, dict):
        return {k: base64.b64encode(v).decode() if k == "B" else _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _json_error(request: Any, status: int, code: str, **extra: Any) -> AWSResponse:
    body = json.dumps({"__type": code, "message": "injected", **extra}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "injected"}
    return AWSResponse(request.url, status, headers, MockRawResponse(body))  # type: ignore[arg-type]


class _ClockTime(SimpleNamespace):
    """botocore.endpoint's ``time``: its retry sleeps advance the test clock."""

    def __init__(self, clock: LambdaClock) -> None:
        super().__init__(sleep=clock.sleep)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Injector:
    """Sees every AWS attempt and Apicbase request while armed; fails the ones the faults choose,
    charging the clock what each costs."""

    def __init__(self, clock: LambdaClock, dynamodb: Any) -> None:
        self.clock = clock
        self.dynamodb = dynamodb  # reads what a real failed condition returns
        self.faults: tuple[Fault, ...] = ()
        self.armed = False
        self.run_: Run = Run()
        self._quotas: list[quota.RetryQuota] = []

    # --- installation ------------------------------------------------------------------------
    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Before any client is built: every botocore client of the process goes through here."""
        current: contextvars.ContextVar[Any] = contextvars.ContextVar("client", default=None)
        make_api_call = BaseClient._make_api_call
        stubber_call = BotocoreStubber.__call__
        injector = self

        def tracked(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            token = current.set(client)
            try:
                return make_api_call(client, operation, params)
            finally:
                current.reset(token)

        def stub(stubber: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
            proceed = lambda: stubber_call(stubber, event_name, request, **kwargs)  # noqa: E731
            return injector._aws(event_name, request, proceed, current.get())

        monkeypatch.setattr(BaseClient, "_make_api_call", tracked)
        monkeypatch.setattr(BotocoreStubber, "__call__", stub)
        monkeypatch.setattr(botocore.endpoint, "time", _ClockTime(self.clock))
        # Backoff jitter at its longest: the worst case of every retry (standard and legacy modes).
        defaults = standard.ExponentialBackoff.__init__.__defaults__
        assert defaults is not None and len(defaults) == 4
        monkeypatch.setattr(standard.ExponentialBackoff.__init__, "__defaults__", (20, lambda: 1.0, None, None))
        monkeypatch.setattr(botocore.retryhandler, "random", SimpleNamespace(random=lambda: 1.0))
        quota_init = quota.RetryQuota.__init__

        def remembered(retry_quota: quota.RetryQuota, *args: Any, **kwargs: Any) -> None:
            quota_init(retry_quota, *args, **kwargs)
            self._quotas.append(retry_quota)

        monkeypatch.setattr(quota.RetryQuota, "__init__", remembered)

    def attach_apicbase(self, session: requests.Session) -> None:
        post = session.post

        def wrapped(url: str, **kwargs: Any) -> requests.Response:
            return self._http(session, post, url, **kwargs)

        session.post = wrapped  # type: ignore[method-assign]

    # --- runs ---------------------------------------------------------------------------------
    def run(self, faults: tuple[Fault, ...], action: Callable[[], Any]) -> Any:
        """``action`` with ``faults`` armed; ``self.run_`` tells what happened."""
        for retry_quota in self._quotas:  # every run starts as a fresh container would
            retry_quota._available_capacity = retry_quota._max_capacity
        self.faults, self.armed, self.run_ = faults, True, Run()
        kills = self.clock.deadline_kills
        try:
            return action()
        except ProcessKilled:
            self.run_.killed = "deadline" if self.clock.deadline_kills > kills else "fault"
            durable = ("UpdateItem CONN# save", "PutItem RESCUE#", "SendMessage")
            if self.run_.granted and not self.run_.landed_any(*durable):
                self.run_.killed_after_grant_before_landing = True
            raise
        finally:
            self.armed = False

    def _attempt(
        self, service: str, operation: str, conditional: bool = False, try_number: int = 1
    ) -> tuple[Attempt, Fault | None]:
        attempt = Attempt(len(self.run_.attempts), service, operation, conditional, self.run_.answered, try_number)
        self.run_.attempts.append(attempt)
        fault = next((f for f in self.faults if f.matches(attempt)), None)
        if fault is not None:
            self.run_.fired.append((attempt, fault))
        return attempt, fault

    def _meanwhile(self, fault: Fault) -> None:
        """Another process's turn: its calls are neither observed nor failed, its clock is its own."""
        assert fault.action is not None
        state = self.faults, self.armed, self.run_, self.clock.deadline
        self.armed, self.clock.deadline = False, None
        try:
            fault.action()
        finally:
            self.faults, self.armed, self.run_, self.clock.deadline = state

    # --- AWS ----------------------------------------------------------------------------------
    def _aws(self, event_name: str, request: Any, proceed: Callable[[], Any], client: Any) -> Any:
        if not self.armed:
            return proceed()
        _, service, operation = event_name.split(".", 2)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        sdk_request = str(request.headers.get("amz-sdk-request", b"") or "")
        tried = sdk_request.partition("attempt=")[2].partition(";")[0].strip("' ")
        try_number = int(tried) if tried.isdigit() else 1
        attempt, fault = self._attempt(
            service, _label(service, operation, body), "ConditionExpression" in body, try_number
        )
        config = client.meta.config if client is not None else None
        connect_timeout = float(getattr(config, "connect_timeout", None) or 60)
        read_timeout = float(getattr(config, "read_timeout", None) or 60)
        kind = fault.kind if fault else None

        def landing() -> Any:
            response = proceed()
            if response is not None and response.status_code < 300 and (attempt.dynamodb_write or service == "sqs"):
                self.run_.landed.append(attempt)
            return response

        if kind == MEANWHILE:
            self._meanwhile(fault)
            return landing()
        if kind is None:
            return landing()
        if kind == READ_TIMEOUT:
            self.clock.advance(read_timeout)
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == LANDED:
            landing()
            self.clock.advance(read_timeout)
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == UNREACHABLE:
            self.clock.advance(connect_timeout)
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == SLOW:
            self.clock.advance(max(read_timeout - 0.5, 0))
            return landing()
        if kind == KILLED:
            landing()
            raise ProcessKilled()
        if kind == LAPSED:
            self.clock.jump(LEASE_SECONDS + 1)
            return landing()
        if kind == THROTTLED:
            return _json_error(request, 400, "ThrottlingException")
        if kind == SERVER_ERROR:
            return _json_error(request, 500, SERVER_ERRORS.get(service, "InternalFailure"))
        if kind == CONDITION_FAILED:
            extra: dict[str, Any] = {}
            if body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                # As DynamoDB does: the item as it is comes back with the failed condition.
                self.armed = False
                try:
                    item = self.dynamodb.get_item(TableName=body["TableName"], Key=body["Key"]).get("Item")
                finally:
                    self.armed = True
                if item:
                    extra["Item"] = _wire(item)
            return _json_error(request, 400, CONDITION_FAILED, **extra)
        # Any other error code: a 4xx answer, immediately (botocore retries what it deems retryable).
        return _json_error(request, 500 if "Internal" in kind else 400, kind)

    # --- Apicbase -----------------------------------------------------------------------------
    def _http(self, session: requests.Session, post: Callable[..., requests.Response], url: str, **kwargs: Any) -> Any:
        if not self.armed:
            return post(url, **kwargs)
        operation = "token" if url.endswith("/token/") else "introspect" if "introspect" in url else "revoke"
        _, fault = self._attempt("apicbase", operation)
        connect_timeout, read_timeout = kwargs["timeout"]
        kind = fault.kind if fault else None

        def carried_out() -> requests.Response:
            response = post(url, **kwargs)
            if operation == "token" and response.status_code < 300:
                self.run_.granted += 1
            return response

        def answered(response: requests.Response) -> requests.Response:
            if operation == "token" and response.status_code < 300:
                self.run_.answered = True
            return response

        if kind == MEANWHILE:
            self._meanwhile(fault)
            return answered(carried_out())
        if kind is None:
            return answered(carried_out())
        if kind == CONNECT_TIMEOUT:
            retry = session.get_adapter(url).max_retries
            while True:
                self.clock.advance(connect_timeout)
                try:
                    retry = retry.increment("POST", url, error=SocketConnectTimeout("injected"))
                except MaxRetryError:
                    raise requests.ConnectTimeout("injected") from None
                self.clock.advance(retry.get_backoff_time())
                if not fault.sticky:  # the retry connects
                    return answered(carried_out())
        if kind == APICBASE_READ_TIMEOUT:
            self.clock.advance(read_timeout)
            raise requests.ReadTimeout("injected")
        if kind == ANSWER_LOST:
            carried_out()
            self.clock.advance(read_timeout)
            raise requests.ReadTimeout("injected")
        if kind == APICBASE_SLOW:
            self.clock.advance(read_timeout - 0.5)
            return answered(carried_out())
        if kind == HTTP_500:
            response = requests.Response()
            response.status_code, response._content = 500, b"<html>500</html>"
            return response
        if kind == KILLED:
            carried_out()
            raise ProcessKilled()
        if kind == LAPSED:
            self.clock.jump(LEASE_SECONDS + 1)
            return answered(carried_out())
        return answered(_reshaped(carried_out(), kind))


def _reshaped(response: requests.Response, kind: str) -> requests.Response:
    """Apicbase's real answer (it did the work, and rotated) with its body made odd or unusable."""
    body = response.json()
    if "access_token" not in body:
        return response
    if kind == "2xx: not JSON":
        response._content = b"<html><body>OK</body></html>"
        return response
    if kind == "odd 2xx: no expires_in":
        body.pop("expires_in", None)
    elif kind == "odd 2xx: expires_in 604800.0":
        body["expires_in"] = 604800.0
    elif kind == "odd 2xx: token_type 'Bearer '":
        body["token_type"] = "Bearer "
    elif kind == UNUSABLE_ACCESS:
        body["access_token"] = "a" * 9000
    elif kind == "2xx: refresh token with a space":
        body["refresh_token"] = body["refresh_token"][:4] + " " + body["refresh_token"][4:]
    else:
        raise AssertionError(kind)
    response._content = json.dumps(body).encode()
    return response


AWS_KINDS = (READ_TIMEOUT, UNREACHABLE, THROTTLED, SERVER_ERROR)
APICBASE_KINDS = (
    CONNECT_TIMEOUT,
    APICBASE_READ_TIMEOUT,
    ANSWER_LOST,
    APICBASE_SLOW,
    HTTP_500,
    *ODD_2XX,
    UNUSABLE_ACCESS,
    *UNREADABLE_2XX,
)


def single_faults(trace: list[Attempt]) -> Iterator[Fault]:
    """Every fault kind at every attempt of a clean run, once and for good; every attempt also
    killed right after, and the lease lapsing during it."""
    for attempt in trace:
        yield Fault.at(attempt, KILLED)
        yield Fault.at(attempt, LAPSED)
        if attempt.service == "apicbase":
            for kind in APICBASE_KINDS:
                if attempt.operation == "token" or kind in (CONNECT_TIMEOUT, APICBASE_READ_TIMEOUT, HTTP_500):
                    yield Fault.at(attempt, kind)
                    if kind == CONNECT_TIMEOUT:
                        yield Fault.at(attempt, kind, sticky=True)
            continue
        yield Fault.at(attempt, SLOW)
        yield Fault.at(attempt, LANDED)
        for kind in AWS_KINDS:
            yield Fault.at(attempt, kind)
            yield Fault.at(attempt, kind, sticky=True)
        # A failed condition on the write of a pair means another writer stored a newer grant;
        # faking one where none exists would test the fake, not the broker.
        if attempt.conditional and not attempt.operation.endswith("save"):
            yield Fault.at(attempt, CONDITION_FAILED)


def after(first: Fault, trace: list[Attempt], start: int) -> Iterator[tuple[Fault, Fault]]:
    """Double faults: ``first``, then each kind at each attempt of ``trace`` (a run with ``first``
    alone) from ``start`` on, but for the attempts ``first`` fails anyway."""
    for attempt in trace[start:]:
        if first.matches(attempt):
            continue
        if attempt.service == "apicbase":
            for kind in (APICBASE_READ_TIMEOUT, HTTP_500, KILLED):
                yield first, Fault.at(attempt, kind)
            continue
        for kind in (*AWS_KINDS, KILLED, LANDED):
            yield first, Fault.at(attempt, kind)
            if kind in AWS_KINDS:
                yield first, Fault.at(attempt, kind, sticky=True)
