"""Faults, a matrix: each AWS call and each Apicbase request of a callback and of a refresh, in turn,
fails once (or for good), in every way it can; after each run the invariants must hold.

The calls are enumerated from a clean run (botocore ``before-call`` on the clients of the
handlers' deps, and the Apicbase client's HTTP session), not written down by hand, so a new call
in the code is a new row of the matrix.

The known window (DESIGN.md, refresh.py): a refresh token rotated at Apicbase and then not stored
(the answer lost on the way back, or the write after it failing for good). Those cells, and only
those, may lose the refresh token; the connection must then say so in the logs, turn
needs_reauthorization on its next refresh, and be recovered by connecting again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from apicbase_oauth import pages
from apicbase_oauth.config import LEASE_SECONDS
from apicbase_oauth.model import ACTIVE, NEEDS_REAUTHORIZATION
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
APICBASE_ERRORS = ["ConnectTimeout", "ReadTimeout", "ReadTimeout after Apicbase answered", "HTTP 500"]
# What a rotated-but-lost refresh token looks like from inside: only these cells may lose it.
LOSING_CELLS = {
    ("apicbase", "token", "ReadTimeout after Apicbase answered"),
    ("kms", "Encrypt", "sticky"),
    ("dynamodb", "UpdateItem#save", "sticky"),
}


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

    def __init__(self, dynamodb: Any) -> None:
        self.dynamodb = dynamodb  # not instrumented: reads what a real failed condition returns
        self.calls: list[tuple[str, str, bool]] = []  # (service, operation, conditional)
        self.fault: Fault | None = None
        self.armed = False
        self._landed = False

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
        if fault is None or fault.kind.endswith("landed"):
            self._landed = fault is not None
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
            raise ReadTimeoutError(endpoint_url="https://aws.example/")

    def _http(self, post: Callable[..., requests.Response], url: str, **kwargs: Any) -> requests.Response:
        fault = self._hit("apicbase", "token" if url.endswith("/token/") else "introspect", False)
        if fault is None:
            return post(url, **kwargs)
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


def faults_for(trace: list[tuple[str, str, bool]]) -> Iterator[Fault]:
    """Every fault kind at every call of a clean run, once and for good."""
    for index, (service, operation, conditional) in enumerate(trace):
        if service == "apicbase":
            for kind in APICBASE_ERRORS:
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
    injector = Injector(handlers.aws.session.client("dynamodb"))
    provider = parameters.SecretsProvider()
    for module in (callback, admin):
        deps = module.DEPS
        injector.attach_aws(deps.store.table.meta.client)
        injector.attach_aws(deps.cipher.kms)
        injector.attach_aws(deps.events.events)
        injector.attach_apicbase(deps.apicbase.session)
    injector.attach_aws(provider.client)
    return Rig(handlers, apicbase, watch, callback, admin, injector, provider)


@dataclass
class Rig:
    handlers: Any
    apicbase: Any
    watch: Any
    callback: Any
    admin: Any
    injector: Injector
    provider: Any

    def fresh_secret_cache(self) -> None:
        self.provider.clear_cache()
        DEFAULT_PROVIDERS["secrets"] = self.provider

    def connect(self, fault: Fault | None = None) -> dict[str, Any]:
        """A browser coming back from Apicbase with a good code and state."""
        state, binder = open_in_browser(self.callback.DEPS, CID)  # connect_url opened in this browser
        self.fresh_secret_cache()  # a cold container: the callback reads the secret itself
        query = [("code", self.apicbase.issue_code()), ("state", state)]
        event = http_event("GET", "/oauth/callback", query=query, cookies=[f"{pages.BINDER_COOKIE}={binder}"])
        event["rawQueryString"] = urlencode(query)
        response = self.injector.run(fault, lambda: self.handlers.invoke(self.callback, event))
        self.watch.see(response["body"])
        return response

    def refresh(self, fault: Fault | None = None) -> dict[str, Any]:
        self.fresh_secret_cache()
        event = http_event("POST", f"/connections/{CID}/refresh")
        response = self.injector.run(fault, lambda: self.handlers.invoke(self.admin, event))
        self.watch.see(response["body"])
        return response

    def stored(self) -> Any:
        try:
            return self.admin.DEPS.store.get(CID)
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


def _assert_cell_invariants(rig: Rig, response: dict[str, Any], *, was_stored: bool) -> str:
    """Honest answer, recoverable state; returns 'intact' or 'lost' (the stored refresh token is
    no longer live at Apicbase)."""
    status = response["statusCode"]
    assert status in {200, 302, 400, 409, 503}, f"{status}: {response['body'][:300]}"
    connection = rig.stored()
    if status == 200 and connection is None:
        pytest.fail("a success answer with nothing stored")
    if connection is None:
        assert not was_stored
        return "not stored"
    assert connection.status in {ACTIVE, NEEDS_REAUTHORIZATION}
    now = int(rig.handlers.clock())
    assert connection.lease_until is None or connection.lease_until <= now + LEASE_SECONDS
    return "intact" if rig.live() else "lost"


def _record(fault: Fault, outcome: str, matrix: dict[str, int], flow: str) -> None:
    FIGURES[f"faults: injected ({flow})"] += 1
    matrix[outcome] = matrix.get(outcome, 0) + 1


def test_callback_fault_matrix(rig):
    """Given a callback with a good code and state,
    when each AWS call and Apicbase request of it fails in turn, in each way, once or for good,
    then the answer is honest (success only when stored, 503 when a dependency failed, a 4xx
    otherwise), no half-stored connection exists, and connecting again always works."""
    clean = rig.connect()
    assert clean["statusCode"] == 200
    trace = list(rig.injector.calls)
    matrix: dict[str, int] = {}
    for fault in faults_for(trace):
        rig.admin.DEPS.store.table.delete_item(Key={"pk": f"CONN#{CID}"})
        response = rig.connect(fault)
        outcome = _assert_cell_invariants(rig, response, was_stored=False)
        assert outcome != "lost", str(fault)
        if response["statusCode"] == 200:
            assert rig.live()
        else:
            assert rig.stored() is None, f"{fault}: answered {response['statusCode']} but stored a connection"
            assert body_is_honest(response, fault), f"{fault}: {response['statusCode']}"
            assert rig.connect()["statusCode"] == 200, f"{fault}: cannot reconnect"
        _record(fault, f"{response['statusCode']}", matrix, "callback")
    FIGURES["faults: callback calls enumerated"] = len(trace)
    print("callback fault matrix:", _calls(trace), json.dumps(matrix, sort_keys=True))


def body_is_honest(response: dict[str, Any], fault: Fault) -> bool:
    """A dependency's failure is a 503; a 4xx only for a failed condition (the state is gone)."""
    if response["statusCode"] == 503:
        return True
    return response["statusCode"] == 400 and fault.kind == "ConditionalCheckFailedException"


def test_refresh_fault_matrix(rig):
    """Given a connection due for a refresh,
    when each AWS call and Apicbase request of POST /connections/{id}/refresh fails in turn, in
    each way, once or for good,
    then the answer is honest, no lease outlives LEASE_SECONDS, the status is active or
    needs_reauthorization, and the refresh token is lost only in the known window, where an error
    is logged and connecting again recovers the connection."""
    seed_connection(rig.admin.DEPS, rig.apicbase, CID, expires_in=60)
    clean = rig.refresh()
    assert clean["statusCode"] == 200, clean["body"]
    trace = list(rig.injector.calls)
    matrix: dict[str, int] = {}
    lost_cells: dict[tuple[str, str, str], list[str]] = {}
    for fault in faults_for(trace):
        seed_connection(rig.admin.DEPS, rig.apicbase, CID, expires_in=60)
        since, presented = len(rig.watch.log_lines), rig.apicbase.refresh_requests
        response = rig.refresh(fault)
        # No blind retry: a refresh token is presented at most once per run (reuse protection).
        assert rig.apicbase.refresh_requests - presented <= 1, str(fault)
        outcome = _assert_cell_invariants(rig, response, was_stored=True)
        answer = body_json(response)
        if response["statusCode"] == 200:
            assert outcome == "intact", f"{fault}: success answered but the stored token is dead"
        else:
            assert answer["error"]["code"] in {"dependency_unavailable", "apicbase_unavailable", "refresh_in_progress"}
        if outcome == "lost":
            lost_cells.setdefault(_cell(fault), []).append(str(fault))
            assert rig.logged_about_connection(since), f"{fault}: token lost without a word in the logs"
            _assert_recovers_by_reconnecting(rig, fault)
        else:
            _assert_recovers_by_refreshing(rig, fault)
        _record(fault, f"{response['statusCode']} {outcome}", matrix, "refresh")
    FIGURES["faults: refresh calls enumerated"] = len(trace)
    FIGURES["faults: refresh cells that lost the refresh token (known window)"] = matrix_lost(matrix)
    print(
        "refresh fault matrix:",
        _calls(trace),
        json.dumps(matrix, sort_keys=True),
        json.dumps({" ".join(k): v for k, v in lost_cells.items()}),
    )
    assert set(lost_cells) <= LOSING_CELLS, lost_cells


def _calls(trace: list[tuple[str, str, bool]]) -> str:
    return ", ".join(f"{service}.{operation}" for service, operation, _ in trace)


def matrix_lost(matrix: dict[str, int]) -> int:
    return sum(count for outcome, count in matrix.items() if outcome.endswith("lost"))


def _cell(fault: Fault) -> tuple[str, str, str]:
    return (fault.service, fault.operation, "sticky" if fault.sticky else fault.kind)


def _assert_recovers_by_refreshing(rig: Rig, fault: Fault) -> None:
    rig.handlers.clock.advance(LEASE_SECONDS + 1)
    again = rig.refresh()
    assert again["statusCode"] == 200, f"{fault}: no recovery: {again['body']}"
    assert rig.live()


def _assert_recovers_by_reconnecting(rig: Rig, fault: Fault) -> None:
    rig.handlers.clock.advance(LEASE_SECONDS + 1)
    again = rig.refresh()
    assert body_json(again)["error"]["code"] == "needs_reauthorization", f"{fault}: {again['body']}"
    assert rig.connect()["statusCode"] == 200
    assert rig.stored().status == ACTIVE and rig.live()
