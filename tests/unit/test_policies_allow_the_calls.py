"""The roles allow what the code does, and the code uses what the roles allow. moto does not
enforce IAM, so here every function runs through its real handler on moto with local/iam.py's
enforcer on its session (the evaluation the local run applies: a refused call fails inside the
function as it fails on AWS), on every event source template.yaml gives it (every HTTP route,
the schedule, the queue, the table's stream) and every custody path (park, rescue apply, the
parked pair's SQS copy, the proxy's budget, revocation, the identity check, the scheduler's
sweep), and the connection events' dead-lettering and replay.

By construction: a route or event source of any function that no flow drives fails here; so does
a refused call, and so does a permission (a statement's action) that no call needed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from local import iam
from local import template as tpl
from local.lambda_context import LambdaContext
from local.runtime import limits
from local.streams import check_role

from apicbase_oauth import announce, proxy
from apicbase_oauth import deps as deps_module
from apicbase_oauth.adapters.queue import encode
from apicbase_oauth.config import Settings
from apicbase_oauth.model import Grant, Rescue, TokenPair
from tests import fakes
from tests.binding import start_id_of, state_of
from tests.conftest import REGION, load_event
from tests.unit.refresh_support import seed, stored_pair
from tests.unit.stream_support import EVENTS_FUNCTION, Feed

CID = "lib-42"
# What the flows below drive besides the routes and event sources (which the template lists).
CUSTODY_PATHS = {
    "identity check",
    "callback parks",
    "admin parks",
    "worker parks",
    "rescue applied by the next refresh",
    "rescue applied by the worker",
    "scheduler sweeps a parked pair",
    "proxy spends the budget",
    "disconnect revokes",
    "disconnect forgets a parked pair",
    "a revoked grant needs reauthorization",
    "events dead-lettered",
    "events replayed",
}


def event_source(event: dict[str, Any]) -> str:
    """What invoked a function, as its template names it: an HTTP route key, else the event type."""
    if "routeKey" in event:
        return str(event["routeKey"])
    if event.get("detail-type") == "Scheduled Event":
        return "Schedule"
    records = event.get("Records") or [{}]
    return {"aws:sqs": "SQS", "aws:dynamodb": "DynamoDB", "aws:kinesis": "Kinesis"}.get(
        str(records[0].get("eventSource")), "EventBridgeRule"
    )


def template_sources(template: dict[str, Any], fn: tpl.Function) -> set[str]:
    """Every way the template invokes the function, in event_source's terms: its SAM events, and
    the event source mappings of its own (a table's stream is DynamoDB)."""
    sources = set()
    for event in fn.events.values():
        if event["Type"] == "HttpApi":
            sources.add(f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}")
        else:
            sources.add({"ScheduleV2": "Schedule"}.get(event["Type"], event["Type"]))
    for mapping in tpl.resources_of_type(template, "AWS::Lambda::EventSourceMapping").values():
        if mapping["Properties"]["FunctionName"] == {"Ref": fn.logical_id}:
            arn = json.dumps(mapping["Properties"]["EventSourceArn"])
            sources.add("DynamoDB" if "StreamArn" in arn else arn)
    return sources


class Flows:
    """Invokes the functions' real handlers, each with its role enforced (and every decision
    kept) on the session its AWS clients come from; can make chosen calls fail after IAM saw them."""

    def __init__(self, load_handler, aws, template, clock) -> None:
        self.load_handler, self.aws, self.template, self.clock = load_handler, aws, template, clock
        self.requests = iam.RequestContext(
            aws.refs["AWS::Region"], aws.refs["AWS::AccountId"], iam.partition_keys(template, aws.refs)
        )
        self.enforcers: dict[str, iam.Enforcer] = {}
        self.sources: dict[str, set[str]] = {}
        self.paths: set[str] = set()
        self.stopped: BaseException | None = None  # what stopped the flows before their end
        self._failing: Callable[[iam.Call], bool] | None = None

    def enforcer(self, logical_id: str) -> iam.Enforcer:
        return self.enforcers.setdefault(
            logical_id,
            iam.Enforcer(
                logical_id, iam.statements(self.template, logical_id, self.aws.refs), self.requests, keep=True
            ),
        )

    def session(self, logical_id: str) -> boto3.session.Session:
        """A session whose every call is the function's: its role enforced, its faults injected."""
        session = boto3.session.Session(region_name=REGION)
        self.enforcer(logical_id).register(session.events)
        session.events.register_last("before-call", self._fault)
        return session

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        session = self.session(logical_id)
        module = self.load_handler(logical_id)
        settings = Settings.from_env(self.aws.env(self.template, logical_id))
        module.DEPS = deps_module.build(settings, session=session, now=self.clock)
        module.DEPS.sleep = self.clock.sleep
        if hasattr(module, "PROXY"):
            module.PROXY = proxy.build(module.DEPS)
        self.sources.setdefault(logical_id, set()).add(event_source(event))
        timeout, memory = limits(self.template, tpl.functions(self.template)[logical_id])
        return module.lambda_handler(event, LambdaContext(logical_id, memory, timeout, clock=self.clock))

    @contextlib.contextmanager
    def failing(self, when: Callable[[iam.Call], bool]) -> Iterator[None]:
        """Calls for which ``when`` holds fail for good (DynamoDB's InternalServerError)."""
        self._failing = when
        try:
            yield
        finally:
            self._failing = None

    def _fault(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        if self._failing is None or not any(self._failing(c) for c in self.requests.calls(model, params)):
            return None
        error = {"Error": {"Code": "InternalServerError", "Message": "injected by the test"}}
        return AWSResponse("", 500, HTTPHeaders(), None), {**error, "ResponseMetadata": {"HTTPStatusCode": 500}}

    @property
    def decisions(self) -> dict[str, list[iam.Decision]]:
        return {name: enforcer.decisions for name, enforcer in self.enforcers.items()}


def token_write(call: iam.Call) -> bool:
    """A connection's write of a new pair (the write custody parks when it never lands)."""
    leading = call.context.get("dynamodb:LeadingKeys", [""])[0]
    return (
        call.action == "dynamodb:UpdateItem"
        and leading.startswith("CONN#")
        and "tokens" in call.context["dynamodb:Attributes"]
    )


def http(name: str, *, body: dict[str, Any] | None = None, route: str | None = None) -> dict[str, Any]:
    """A sample admin event, with another body or another route (``METHOD /path``) of the same path."""
    event = load_event(name)
    if body is not None:
        event.update(body=json.dumps(body), isBase64Encoded=False)
    if route is not None:
        method, path = route.split(" ", 1)
        event["routeKey"] = event["requestContext"]["routeKey"] = route
        event["requestContext"]["http"]["method"] = method
        event["rawPath"] = event["requestContext"]["http"]["path"] = path.replace("{connection_id}", CID)
    return event


def ok(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] < 300, response.get("body")
    return response


def connect(flows: Flows, apicbase: fakes.FakeApicbase, connection_id: str, **session: Any) -> dict[str, Any]:
    """POST /connect-sessions, GET /oauth/start in the person's browser, then the callback."""
    started = flows.invoke(
        "ConnectionsFunction",
        http("admin_create_connect_session.json", body={"connection_id": connection_id, **session}),
    )
    opened = load_event("callback.json")
    opened.update(routeKey="GET /oauth/start", rawPath="/oauth/start")
    opened["queryStringParameters"] = {"session": start_id_of(json.loads(ok(started)["body"])["connect_url"])}
    redirected = flows.invoke("CallbackFunction", opened)
    callback = load_event("callback.json")
    callback["queryStringParameters"] = {
        "code": apicbase.issue_code(),
        "state": state_of(redirected["headers"]["Location"]),
    }
    callback["cookies"] = [redirected["cookies"][0].split(";")[0]]
    return dict(flows.invoke("CallbackFunction", callback))


def sqs(*bodies: str) -> dict[str, Any]:
    event = load_event("sqs_refresh_batch.json")
    record = event["Records"][0]
    event["Records"] = [{**record, "messageId": f"m-{i}", "body": body} for i, body in enumerate(bodies)]
    return event


def park(deps, apicbase, clock) -> None:
    """A pair parked for CID, as custody leaves one whose write never landed."""
    grant = Grant(
        connection_id=CID,
        application="default",
        client_id=deps.connections.get(CID).client_id,
        tokens=deps.cipher.encrypt(CID, TokenPair(*apicbase.issue_pair())),
        expires_at=int(clock()) + 3600,
        scope=None,
        username=None,
        source="callback",
    )
    deps.connections.park(Rescue.of_grant(grant, parked_at=int(clock()) + 1))
    clock.advance(2)


def drive_everything(flows: Flows, deps, apicbase, clock) -> Flows:
    # Connect, with the identity check: the expected user, then another one (nothing stored).
    assert connect(flows, apicbase, "lib-1", expected_username=apicbase.username)["statusCode"] in {200, 302}
    assert connect(flows, apicbase, "lib-2", expected_username="someone-else")["statusCode"] == 400
    flows.paths.add("identity check")
    # The callback's write never lands: the sealed pair is parked (table and SQS).
    with flows.failing(token_write):
        connect(flows, apicbase, "lib-3")
    assert deps.connections.parked("lib-3") is not None
    flows.paths.add("callback parks")

    # Every admin route (the proxy spends the budget), then the disconnect revokes.
    access = seed(deps, apicbase, CID, expires_in=60).access_token
    for event in [
        http("admin_get_token.json"),
        http("admin_get_token.json", body={"rejected_token": access}, route="POST /connections/{connection_id}/token"),
        http("admin_refresh.json"),
        http("admin_get_connection.json"),
        http("admin_proxy_apicbase.json"),
        http("admin_list_connections.json"),
        http("admin_import_tokens.json"),
        http("admin_exchange_code.json", body={"code": apicbase.issue_code()}),
        http("admin_delete_connection.json"),
    ]:
        ok(flows.invoke("ConnectionsFunction", event))
    assert apicbase.revocations
    flows.paths |= {"proxy spends the budget", "disconnect revokes"}

    # A forced refresh whose write never lands parks the pair; the next refresh (the lease lapsed)
    # applies it before presenting anything.
    seed(deps, apicbase, CID, expires_in=60)
    with flows.failing(token_write):
        flows.invoke("ConnectionsFunction", http("admin_refresh.json"))
    assert deps.connections.parked(CID) is not None
    flows.paths.add("admin parks")
    clock.advance(deps.settings.lease_seconds + 1)
    ok(flows.invoke("ConnectionsFunction", http("admin_refresh.json")))
    assert deps.connections.parked(CID) is None
    flows.paths.add("rescue applied by the next refresh")
    # A disconnect forgets a pair parked meanwhile, and revokes it too.
    park(deps, apicbase, clock)
    ok(flows.invoke("ConnectionsFunction", http("admin_delete_connection.json")))
    assert deps.connections.parked(CID) is None
    flows.paths.add("disconnect forgets a parked pair")

    # The schedule queues a due connection; the worker refreshes it.
    seed(deps, apicbase, CID, expires_in=60)
    flows.invoke("RefreshSchedulerFunction", load_event("scheduled_tick.json"))
    before = apicbase.refresh_requests
    assert flows.invoke("RefreshWorkerFunction", load_event("sqs_refresh_batch.json"))["batchItemFailures"] == []
    assert apicbase.refresh_requests == before + 1
    # The worker's write never lands: parked.
    seed(deps, apicbase, CID, expires_in=60)
    with flows.failing(token_write):
        flows.invoke("RefreshWorkerFunction", sqs(encode(CID, int(clock()))))
    parked = deps.connections.parked(CID)
    assert parked is not None
    flows.paths.add("worker parks")
    # The scheduler's sweep finds the parked pair and queues it; the worker applies it.
    assert flows.invoke("RefreshSchedulerFunction", load_event("scheduled_tick.json"))["parked"] >= 1
    flows.paths.add("scheduler sweeps a parked pair")
    assert flows.invoke("RefreshWorkerFunction", sqs(encode(CID, int(clock()), sweep=True)))["batchItemFailures"] == []
    assert deps.connections.parked(CID) is None
    assert stored_pair(deps, CID).refresh_token == deps.cipher.decrypt(CID, parked.tokens).refresh_token
    flows.paths.add("rescue applied by the worker")
    # Apicbase refuses a revoked grant: the store is the witness, the connection is marked and announced.
    seed(deps, apicbase, CID, expires_in=60)
    apicbase.revoke_all()
    assert flows.invoke("RefreshWorkerFunction", sqs(encode(CID, int(clock()))))["batchItemFailures"] == []
    assert deps.connections.get(CID).status == "needs_reauthorization"
    flows.paths.add("a revoked grant needs reauthorization")

    # The connection events: the table's stream read as Lambda's event source reads it, with the
    # function's role (checked when the mapping is created, then on every call); the first batch
    # given up to the dead-letter queue, the others put on EventBridge; then the operator's replay.
    stream_arn = flows.aws.refs["ConnectionsTable.StreamArn"]
    flows.enforcer(EVENTS_FUNCTION).decisions.extend(
        check_role(iam.statements(flows.template, EVENTS_FUNCTION, flows.aws.refs), stream_arn)
    )
    attempts: list[dict[str, Any]] = []

    def events_function(event: dict[str, Any]) -> Any:
        attempts.append(event)
        if len(attempts) == 1:
            raise RuntimeError("EventBridge is down")
        return flows.invoke(EVENTS_FUNCTION, event)

    feed = Feed(
        flows.aws, flows.template, events_function, session=flows.session(EVENTS_FUNCTION), max_retries=0, bisect=False
    )
    feed.drain()
    assert feed.poller.given_up == 1
    flows.paths.add("events dead-lettered")
    ok(flows.invoke("ConnectionsFunction", http("admin_delete_connection.json")))
    feed.drain()
    assert len(attempts) == 2
    assert flows.invoke(EVENTS_FUNCTION, announce.REPLAY_REQUEST)["replayed"] == 1
    flows.paths.add("events replayed")
    return flows


@pytest.fixture
def flows(load_handler, aws, template, deps, apicbase, data_api, clock) -> Flows:
    flows = Flows(load_handler, aws, template, clock)
    try:
        drive_everything(flows, deps, apicbase, clock)
    except Exception as stopped:  # a refused call stops a flow: the tests say which call, and where
        flows.stopped = stopped
    return flows


def test_every_aws_call_of_every_function_is_allowed_by_its_own_role(flows) -> None:
    """Given every function driven through its flows with its role enforced,
    then no call was refused, and each function made calls (the check is not vacuous)."""
    refused = [f"{name}: {d.call} ({d.reason()})" for name, ds in flows.decisions.items() for d in ds if not d.allowed]
    assert refused == []
    assert all(flows.decisions.values())
    assert flows.stopped is None


def test_every_route_event_source_and_custody_path_was_driven(flows, template) -> None:
    """Given the template's functions, then every route and event source of each was driven,
    and every custody path: a route added without a flow here fails this test."""
    missing = {
        name: sorted(template_sources(template, fn) - flows.sources.get(name, set()))
        for name, fn in tpl.functions(template).items()
    }
    assert {name: sources for name, sources in missing.items() if sources} == {}
    assert CUSTODY_PATHS - flows.paths == set()
    assert flows.stopped is None


def test_every_permission_of_every_role_is_used(flows, template, aws) -> None:
    """Least privilege the other way: given each role's statements, then every action of every
    statement allowed at least one call the code made; an action no code path used is a failure
    with its function, statement and name."""
    unused = []
    for name in tpl.functions(template):
        used = {(sid, d.call.action.lower()) for d in flows.decisions.get(name, []) for sid in d.allowed_by}
        for index, statement in enumerate(iam.statements(template, name, aws.refs)):
            for action in iam.as_list(statement.get("Action", [])):
                if (iam.sid(statement, index), action.lower()) not in used:
                    unused.append(f"{name}/{iam.sid(statement, index)}: {action}")
    assert unused == []


def test_each_statement_is_the_only_one_that_allows_some_call(flows, template, aws) -> None:
    """Given each role, then every statement is needed: some call was allowed by it alone, so
    removing any one Sid refuses a call the code makes (and the first test fails)."""
    redundant = []
    for name in tpl.functions(template):
        alone = {d.allowed_by[0] for d in flows.decisions.get(name, []) if len(d.allowed_by) == 1}
        sids = [iam.sid(statement, i) for i, statement in enumerate(iam.statements(template, name, aws.refs))]
        redundant += [f"{name}/{sid}" for sid in sids if sid not in alone]
    assert redundant == []


def test_the_recorded_calls_carry_the_conditions_the_policies_test(flows) -> None:
    """Given the calls made, then the conditioned keys were really seen: state, start, connection,
    rescue and budget keys, the encryption context with its purpose, the event source (so the
    tests above evaluated the conditions rather than skipping them)."""
    contexts = [d.call.context for decisions in flows.decisions.values() for d in decisions]
    leading = {key.split("#")[0] for context in contexts for key in context.get("dynamodb:LeadingKeys", [])}
    purposes = {p for context in contexts for p in context.get("kms:EncryptionContext:purpose", [])}
    assert leading == {"STATE", "START", "CONN", "RESCUE", "BUDGET"}
    assert purposes == {"apicbase-oauth-tokens"}
    assert any("events:source" in context for context in contexts)
