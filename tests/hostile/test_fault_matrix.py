"""Faults, a matrix: each AWS call and each Apicbase request of a callback and of a refresh, in turn,
fails once (or for good), in every way it can; after each run the invariants must hold.

The calls are enumerated from a clean run (botocore ``before-call`` on the clients of the
handlers' deps, and the Apicbase client's HTTP session), not written down by hand, so a new call
in the code is a new row of the matrix.

Custody (docs/DESIGN.md, custody.py): no cell loses a grant or a rotated refresh token, except where
the answer itself is lost (in transit, or with a process killed before the write): a lost rotation
then ends within the same refresh (or the next, after a kill) as needs_reauthorization with reason
``rotation_answer_lost``, without the old refresh token ever being presented again. A write that
fails for good parks the sealed pair, and the next refresh applies it. Every call is also "killed
right after" (the process dies: nothing of the broker runs after it), and the clock can jump past
the lease while a refresh holds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from apicbase_oauth import custody
from apicbase_oauth.config import LEASE_SECONDS
from apicbase_oauth.edge import pages
from apicbase_oauth.model import ACTIVE
from tests.binding import open_in_browser
from tests.hostile.conftest import FIGURES, body_json, http_event, seed_connection, stored_pair

CID = "lib-fault"
CLIENT_ERRORS = {
    "dynamodb": ["ThrottlingException", "ProvisionedThroughputExceededException", "InternalServerError"],
    "kms": ["KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException", "ThrottlingException"],
    "secretsmanager": ["InternalServiceError", "ThrottlingException"],
    "events": ["InternalException", "ThrottlingException"],
}
NETWORK_ERRORS = ["ReadTimeoutError", "EndpointConnectionError", "ReadTimeoutError after the write landed"]
APICBASE_ERRORS = [
    "ConnectTimeout",
    "ReadTimeout",
    "ReadTimeout after Apicbase answered",
    "HTTP 500",
    "odd 2xx: no expires_in",
    "odd 2xx: expires_in 604800.0",
    "odd 2xx: token_type 'Bearer '",
]
KILLED = "killed right after"
LAPSED = "lease lapsed while holding"
# The answer lost in transit: the one cell where a rotation may be lost (and must be said at once).
ANSWER_LOST = ("apicbase", "token", "ReadTimeout after Apicbase answered")


class ProcessKilled(BaseException):
    """The process dies: no except clause of the broker runs (it catches Exception at most)."""


@dataclass(frozen=True)
class Fault:
    index: int  # the index-th call (AWS and Apicbase counted together) of the run
    service: str
    operation: str
    kind: str
    sticky: bool  # the same operation keeps failing afterwards (retries included)

    def __str__(self) -> str:
        return f"#{self.index} {self.service}.{self.operation} {self.kind}{' (for good)' if self.sticky else ''}"


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


class Injector:
    """Counts every AWS call and Apicbase request while armed, and fails the chosen one."""

    def __init__(self, dynamodb: Any, clock: Any = None) -> None:
        self.dynamodb = dynamodb  # not instrumented: reads what a real failed condition returns
        self.clock = clock
        self.calls: list[tuple[str, str, bool]] = []  # (service, operation, conditional)
        self.fault: Fault | None = None
        self.armed = False
        self._landed = self._killed = False

    def attach_aws(self, client: Any) -> None:
        client.meta.events.register("before-call", self._before)
        client.meta.events.register("after-call", self._after)

    def attach_apicbase(self, session: requests.Session) -> None:
        post = session.post

        def counted(url: str, **kwargs: Any) -> requests.Response:
            return self._http(post, url, **kwargs)

        session.post = counted  # type: ignore[method-assign]

    @staticmethod
    def _operation(name: str, request: dict[str, Any]) -> str:
        # The refresh writes UpdateItem three ways; tell the one that stores the new pair apart.
        if name == "UpdateItem" and "tokens = :tokens" in request.get("UpdateExpression", ""):
            return "UpdateItem#save"
        return name

    @staticmethod
    def _request(params: dict[str, Any]) -> dict[str, Any]:
        """The operation's parameters, from the serialized request botocore is about to send."""
        body = params.get("body") or b"{}"
        try:
            request = json.loads(body)
        except ValueError:  # a query-protocol service: no JSON body, no condition
            return {}
        return request if isinstance(request, dict) else {}

    def _hit(self, service: str, operation: str, conditional: bool) -> Fault | None:
        if not self.armed:
            return None
        self.calls.append((service, operation, conditional))
        fault = self.fault
        if fault is None:
            return None
        now = len(self.calls) - 1
        if now == fault.index or (fault.sticky and now > fault.index and operation == fault.operation):
            return fault
        return None

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        service = model.service_model.service_name
        request = self._request(params)
        operation = self._operation(model.name, request)
        fault = self._hit(service, operation, "ConditionExpression" in request)
        if fault is not None and fault.kind == LAPSED:
            self.clock.advance(LEASE_SECONDS + 1)  # the lease lapses while this call is under way
            return None
        if fault is None or fault.kind.endswith("landed") or fault.kind == KILLED:
            self._landed = fault is not None
            self._killed = fault is not None and fault.kind == KILLED
            return None
        if fault.kind == "ReadTimeoutError":
            raise ReadTimeoutError(endpoint_url=f"https://{service}.eu-west-1.amazonaws.com/")
        if fault.kind == "EndpointConnectionError":
            raise EndpointConnectionError(endpoint_url=f"https://{service}.eu-west-1.amazonaws.com/")
        status = 500 if "Internal" in fault.kind or fault.kind.endswith("Error") else 400
        error: dict[str, Any] = {
            "Error": {"Code": fault.kind, "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        if fault.kind == "ConditionalCheckFailedException" and "ReturnValuesOnConditionCheckFailure" in request:
            # As DynamoDB does: the item as it is comes back with the failed condition.
            item = self.dynamodb.get_item(TableName=request["TableName"], Key=request["Key"]).get("Item")
            if item:
                error["Item"] = item
        return _Http(status), error

    def _after(self, **_: Any) -> None:
        if self._landed:
            self._landed = False
            if self._killed:
                raise ProcessKilled()
            raise ReadTimeoutError(endpoint_url="https://aws.example/")

    def _http(self, post: Callable[..., requests.Response], url: str, **kwargs: Any) -> requests.Response:
        fault = self._hit("apicbase", "token" if url.endswith("/token/") else "introspect", False)
        if fault is None:
            return post(url, **kwargs)
        if fault.kind == LAPSED:
            self.clock.advance(LEASE_SECONDS + 1)
            return post(url, **kwargs)
        if fault.kind == KILLED:
            post(url, **kwargs)
            raise ProcessKilled()
        if fault.kind.startswith("odd 2xx"):
            return _odd(post(url, **kwargs), fault.kind)
        if fault.kind == "ConnectTimeout":
            raise requests.ConnectTimeout("injected")
        if fault.kind == "ReadTimeout":
            raise requests.ReadTimeout("injected")
        if fault.kind == "HTTP 500":
            response = requests.Response()
            response.status_code, response._content = 500, b"<html>500</html>"
            return response
        post(url, **kwargs)  # Apicbase did the work (and rotated); the answer never came back
        raise requests.ReadTimeout("injected")

    def run(self, fault: Fault | None, action: Callable[[], Any]) -> Any:
        self.calls, self.fault, self.armed = [], fault, True
        try:
            return action()
        finally:
            self.armed = False


def _odd(response: requests.Response, kind: str) -> requests.Response:
    """Apicbase's real answer with one field made odd (a usable pair all the same)."""
    body = response.json()
    if "access_token" in body:
        if kind.endswith("no expires_in"):
            body.pop("expires_in", None)
        elif kind.endswith("604800.0"):
            body["expires_in"] = 604800.0
        else:
            body["token_type"] = "Bearer "
    response._content = json.dumps(body).encode()
    return response


def faults_for(trace: list[tuple[str, str, bool]]) -> Iterator[Fault]:
    """Every fault kind at every call of a clean run, once and for good; every call also killed
    right after, and the lease lapsing during it."""
    for index, (service, operation, conditional) in enumerate(trace):
        yield Fault(index, service, operation, KILLED, sticky=False)
        yield Fault(index, service, operation, LAPSED, sticky=False)
        if service == "apicbase":
            for kind in APICBASE_ERRORS:
                if operation == "token" or not kind.startswith("odd"):
                    yield Fault(index, service, operation, kind, sticky=False)
            continue
        kinds = [*CLIENT_ERRORS[service], *NETWORK_ERRORS]
        # A failed condition on the write of a refreshed pair means another writer stored a newer
        # grant; faking one where none exists would test the fake, not the broker.
        if conditional and operation != "UpdateItem#save":
            kinds.append("ConditionalCheckFailedException")
        for kind in kinds:
            yield Fault(index, service, operation, kind, sticky=False)
            if not kind.endswith("landed"):
                yield Fault(index, service, operation, kind, sticky=True)


@pytest.fixture
def rig(handlers, apicbase, watch):
    """Both handler modules on one moto, every AWS client and the Apicbase session instrumented."""
    callback = handlers.module("CallbackFunction")
    admin = handlers.module("ConnectionsFunction")
    injector = Injector(handlers.aws.session.client("dynamodb"), handlers.clock)
    for module in (callback, admin):
        deps = module.DEPS
        injector.attach_aws(deps.connections.table.meta.client)
        injector.attach_aws(deps.cipher.kms)
        injector.attach_aws(deps.events.events)
        injector.attach_aws(deps.credentials.secrets)
        injector.attach_apicbase(deps.apicbase.session)
    return Rig(handlers, apicbase, watch, callback, admin, injector)


@dataclass
class Rig:
    handlers: Any
    apicbase: Any
    watch: Any
    callback: Any
    admin: Any
    injector: Injector

    def fresh_secret_cache(self) -> None:
        for module in (self.callback, self.admin):
            store = module.DEPS.credentials
            module.DEPS.credentials = type(store)(store.secrets, store.secret_id, max_age=store.max_age)

    def connect(self, fault: Fault | None = None) -> dict[str, Any]:
        """A browser coming back from Apicbase with a good code and state."""
        state, binder = open_in_browser(self.callback.DEPS, CID)  # connect_url opened in this browser
        self.fresh_secret_cache()  # a cold container: the callback reads the secret itself
        query = [("code", self.apicbase.issue_code()), ("state", state)]
        event = http_event("GET", "/oauth/callback", query=query, cookies=[f"{pages.BINDER_COOKIE}={binder}"])
        event["rawQueryString"] = urlencode(query)
        response = self.invoke(self.callback, event, fault)
        self.watch.see(response["body"])
        return response

    def invoke(self, module: Any, event: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        try:
            return self.injector.run(fault, lambda: self.handlers.invoke(module, event))
        except ProcessKilled:
            # API Gateway answers 502 for a function that died; the next invocation is a new
            # container, and the lease the dead one held lapses on its own.
            module.DEPS.cipher._keys.clear()
            return {"statusCode": 502, "headers": {}, "body": '{"message": "Internal Server Error"}'}

    def refresh(self, fault: Fault | None = None) -> dict[str, Any]:
        self.fresh_secret_cache()
        event = http_event("POST", f"/connections/{CID}/refresh")
        response = self.invoke(self.admin, event, fault)
        self.watch.see(response["body"])
        return response

    def stored(self) -> Any:
        try:
            return self.admin.DEPS.connections.get(CID)
        except Exception:
            return None

    def live(self) -> bool:
        return stored_pair(self.admin.DEPS, CID).refresh_token in self.apicbase.live_refresh_tokens

    def logged_about_connection(self, since: int) -> bool:
        """A warning or an error naming the connection was logged since line ``since``."""
        return any(
            CID in line and ('"level":"ERROR"' in line or '"level":"WARNING"' in line)
            for line in self.watch.log_lines[since:]
        )


def _live(rig: Rig, pair: Any) -> bool:
    return pair is not None and pair.refresh_token in rig.apicbase.live_refresh_tokens


def _stored_live(rig: Rig) -> bool:
    return rig.stored() is not None and rig.live()


def _parked_live(rig: Rig) -> bool:
    """The rescue item holds a pair whose refresh token is live at Apicbase."""
    rescue = rig.admin.DEPS.connections.parked(CID)
    return rescue is not None and _live(rig, rig.admin.DEPS.cipher.decrypt(CID, rescue.tokens))


def _reason(rig: Rig) -> str | None:
    connection = rig.stored()
    return connection.reauthorization_reason if connection else None


def _record(fault: Fault, outcome: str, matrix: dict[str, int], flow: str) -> None:
    FIGURES[f"faults: injected ({flow})"] += 1
    matrix[outcome] = matrix.get(outcome, 0) + 1


def _answer_died(fault: Fault, trace: list[tuple[str, str, bool]], *, write: str) -> bool:
    """Apicbase answered and the answer died before the write: lost in transit, or with the process."""
    if _cell(fault) == ANSWER_LOST:
        return True
    token_call = next(i for i, (service, op, _) in enumerate(trace) if (service, op) == ("apicbase", "token"))
    write_call = next(i for i, (_, op, _) in enumerate(trace) if op == write)
    return fault.kind == KILLED and token_call <= fault.index < write_call


def _clear(rig: Rig) -> None:
    table = rig.admin.DEPS.connections.table
    table.delete_item(Key={"pk": f"CONN#{CID}"})
    table.delete_item(Key={"pk": f"RESCUE#{CID}"})


def test_callback_fault_matrix(rig):
    """Given a callback with a good code and state,
    when each AWS call and Apicbase request of it fails in turn, in each way, once or for good,
    or the process is killed right after it,
    then the answer is honest (success only when stored, 503 when a dependency failed, a 4xx
    otherwise), the grant is stored or parked (lost only with its answer), and connecting again
    always works."""
    clean = rig.connect()
    assert clean["statusCode"] == 200
    trace = list(rig.injector.calls)
    matrix: dict[str, int] = {}
    for fault in faults_for(trace):
        _clear(rig)
        issued = len(rig.apicbase.issued_refresh_tokens)
        response = rig.connect(fault)
        status = response["statusCode"]
        assert status in {200, 400, 502, 503}, f"{fault}: {status} {response['body'][:300]}"
        new_grant = len(rig.apicbase.issued_refresh_tokens) > issued
        if status == 200:
            assert _stored_live(rig), f"{fault}: success answered but nothing live stored"
            outcome = "stored"
        elif _stored_live(rig):
            outcome = "stored"  # killed after the write landed
        elif _parked_live(rig):
            assert status in {502, 503}, f"{fault}: {status}"
            rescue = rig.admin.DEPS.connections.parked(CID)
            assert custody.apply_parked(rig.admin.DEPS, rescue) is not None, f"{fault}: parked but not applicable"
            assert _stored_live(rig), f"{fault}: the applied rescue is not live"
            outcome = "parked, then applied"
        elif new_grant and rig.apicbase.issued_refresh_tokens[-1] in rig.apicbase.live_refresh_tokens:
            assert _answer_died(fault, trace, write="UpdateItem#save"), f"{fault}: a grant was issued and lost"
            outcome = "grant lost with its answer"
        else:
            assert body_is_honest(response, fault), f"{fault}: {status}"
            outcome = "not issued"
        assert rig.apicbase.reuses == 0, f"{fault}: a consumed refresh token was presented again"
        _clear(rig)
        assert rig.connect()["statusCode"] == 200, f"{fault}: cannot reconnect"
        _record(fault, outcome, matrix, "callback")
    FIGURES["faults: callback calls enumerated"] = len(trace)
    FIGURES["faults: callback cells that lost a grant (its answer died)"] = matrix.get("grant lost with its answer", 0)
    print("callback fault matrix:", _calls(trace), json.dumps(matrix, sort_keys=True))


def body_is_honest(response: dict[str, Any], fault: Fault) -> bool:
    """A dependency's failure is a 503 (502: the process died); a 4xx only for a failed condition
    (the state is gone)."""
    if response["statusCode"] in {502, 503}:
        return True
    return response["statusCode"] == 400 and fault.kind == "ConditionalCheckFailedException"


def test_refresh_fault_matrix(rig):
    """Given a connection due for a refresh,
    when each AWS call and Apicbase request of POST /connections/{id}/refresh fails in turn, in
    each way, once or for good, or the process is killed right after it, or the lease lapses
    during it,
    then no refresh token is presented twice, the answer is honest, and the rotated refresh token
    is stored, or parked and applied by the next refresh; only an answer that died (in transit:
    said in the same refresh; with the process: said by the next) ends in needs_reauthorization
    with reason rotation_answer_lost."""
    seed_connection(rig.admin.DEPS, rig.apicbase, CID, expires_in=3600)
    clean = rig.refresh()
    assert clean["statusCode"] == 200, clean["body"]
    trace = list(rig.injector.calls)
    matrix: dict[str, int] = {}
    for fault in faults_for(trace):
        _clear(rig)
        seed_connection(rig.admin.DEPS, rig.apicbase, CID, expires_in=3600)
        presented = rig.apicbase.refresh_requests
        response = rig.refresh(fault)
        assert rig.apicbase.refresh_requests - presented <= 1, f"{fault}: presented twice"
        status = response["statusCode"]
        assert status in {200, 409, 502, 503}, f"{fault}: {status} {response['body'][:300]}"
        if status == 200:
            assert _stored_live(rig), f"{fault}: success answered but the stored token is dead"
        if status in {409, 503}:
            code = body_json(response)["error"]["code"]
            assert code in {
                "dependency_unavailable",
                "apicbase_unavailable",
                "refresh_in_progress",
                "tokens_parked",
                "out_of_time",
                "needs_reauthorization",
            }, f"{fault}: {code}"
        outcome = _settle(rig, fault, trace, response)
        assert rig.apicbase.reuses == 0, f"{fault}: a consumed refresh token was presented again ({outcome})"
        _record(fault, outcome, matrix, "refresh")
    assert rig.apicbase.reuses == 0
    FIGURES["faults: refresh calls enumerated"] = len(trace)
    FIGURES["faults: refresh cells that lost a rotation (its answer died)"] = sum(
        v for k, v in matrix.items() if k.startswith("answer died")
    )
    print("refresh fault matrix:", _calls(trace), json.dumps(matrix, sort_keys=True))


def _settle(rig: Rig, fault: Fault, trace: list[tuple[str, str, bool]], response: dict[str, Any]) -> str:
    """What became of the refresh token, after the next refresh (the lease lapsed) ran."""
    if response["statusCode"] == 409 and _reason(rig) == "rotation_answer_lost":
        assert _cell(fault) == ANSWER_LOST, f"{fault}: rotation_answer_lost where no answer died"
        _assert_recovers_by_reconnecting(rig, fault)
        return "answer died in transit: said at once"
    parked = _parked_live(rig)
    rig.handlers.clock.advance(LEASE_SECONDS + 1)
    again = rig.refresh()
    if again["statusCode"] == 200 and _stored_live(rig):
        return "parked, then applied" if parked else "intact"
    assert _reason(rig) == "rotation_answer_lost", f"{fault}: no recovery: {again['body']}"
    assert _answer_died(fault, trace, write="UpdateItem#save"), f"{fault}: a rotation was lost"
    _assert_recovers_by_reconnecting(rig, fault, refreshed=True)
    return "answer died with the process: said by the next refresh"


def _calls(trace: list[tuple[str, str, bool]]) -> str:
    return ", ".join(f"{service}.{operation}" for service, operation, _ in trace)


def _cell(fault: Fault) -> tuple[str, str, str]:
    return (fault.service, fault.operation, "sticky" if fault.sticky else fault.kind)


def _assert_recovers_by_reconnecting(rig: Rig, fault: Fault, *, refreshed: bool = False) -> None:
    assert rig.connect()["statusCode"] == 200, f"{fault}: cannot reconnect"
    assert rig.stored().status == ACTIVE and rig.live()
