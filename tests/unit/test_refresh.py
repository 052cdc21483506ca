"""The refresh of one connection: rotation, malformed answers, backoff, invalid_grant,
invalid_client, a crash between Apicbase's answer and the write, throttled writes, and what one
refresh costs in AWS calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

from apicbase_oauth import admin, connect, tokens
from apicbase_oauth.adapters.crypto import TokenCipher
from apicbase_oauth.adapters.events import REAUTHORIZATION_REQUIRED, REFRESH_FAILING
from apicbase_oauth.adapters.queue import encode
from apicbase_oauth.edge import answers
from apicbase_oauth.errors import (
    ApicbaseUnavailable,
    InvalidClient,
    MalformedResponse,
    NeedsReauthorization,
    RateLimited,
)
from apicbase_oauth.freshness import Purpose
from apicbase_oauth.model import ACTIVE, NEEDS_REAUTHORIZATION, RefreshResult, TokenPair
from apicbase_oauth.observability import metrics
from apicbase_oauth.refresh import (
    ALREADY_FRESH,
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    REFRESHED,
    ROTATED_ELSEWHERE,
    backoff_seconds,
    refresh_connection,
)
from apicbase_oauth.schedule import refresh_from_message
from tests import fakes
from tests.binding import open_in_browser
from tests.unit.logcapture import captured_logs
from tests.unit.refresh_support import (
    DYNAMODB_READS,
    DYNAMODB_WRITES,
    WEEK,
    AwsCalls,
    EventSink,
    Logs,
    hold_lease,
    refresh_elsewhere,
    seed,
    stored_pair,
)

CID = "lib-1"
DUE = 3600  # expires within the refresh window (48 h), but not within GET /token's leeway


def refresh_due(deps: Any) -> RefreshResult:
    """The scheduled refresh: due when the token expires within the refresh window."""
    return refresh_connection(deps, CID, Purpose("due", deps.settings.schedule_margin_seconds))


@pytest.fixture
def due(deps: Any, apicbase: fakes.FakeApicbase) -> TokenPair:
    return seed(deps, apicbase, CID, expires_in=DUE)


@pytest.fixture
def sink(aws: Any, settings: Any, feed: Any) -> EventSink:
    """What reaches EventBridge once the table's stream went through the events function."""
    return EventSink(aws.session, settings.event_source, feed=feed)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
    return AwsCalls(monkeypatch)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    with captured_logs(caplog) as text:
        yield Logs(text)


@pytest.fixture
def metric_set() -> Iterator[dict[str, Any]]:
    metrics.clear_metrics()
    yield metrics.metric_set
    metrics.clear_metrics()


# --- what Apicbase answers ------------------------------------------------------------------------
def test_a_response_without_refresh_token_keeps_the_old_one(deps, apicbase, due):
    # Given Apicbase answers the refresh without a refresh_token (it did not rotate)
    apicbase.scripted.append((200, {"access_token": "access-new", "expires_in": WEEK, "token_type": "Bearer"}, {}))
    # When the connection is refreshed
    result = refresh_due(deps)
    # Then the new access token is stored next to the old refresh token
    assert result.outcome == REFRESHED
    assert stored_pair(deps, CID) == TokenPair("access-new", due.refresh_token)


MALFORMED = {
    "html_200": (200, "<html><body>Down for maintenance</body></html>", {"Content-Type": "text/html"}),
    "truncated_json": (200, '{"access_token": "access-x", "refresh_tok', {"Content-Type": "application/json"}),
    "refresh_token_with_a_space": (200, {"access_token": "access-x", "refresh_token": "refresh x"}, {}),
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_response_is_recorded_and_the_old_refresh_token_still_works(deps, apicbase, clock, due, answer):
    # Given Apicbase answers the refresh with something that is not a token response
    apicbase.scripted.append(answer)
    # When the connection is refreshed
    with pytest.raises(MalformedResponse):
        refresh_due(deps)
    # Then the failure is recorded, the status and the stored pair are kept
    failed = deps.connections.get(CID)
    assert (failed.status, failed.consecutive_failures, failed.last_error) == (ACTIVE, 1, "malformed_response")
    assert failed.lease_owner is None
    assert stored_pair(deps, CID) == due
    # And once the backoff has passed, the old refresh token still refreshes the connection
    clock.advance(failed.next_attempt_at - clock())
    assert refresh_due(deps).outcome == REFRESHED
    assert stored_pair(deps, CID).refresh_token == apicbase.issued_refresh_tokens[-1]


def test_a_usable_refresh_token_without_an_access_token_is_kept_and_due_at_once(deps, apicbase, clock, due):
    # Given Apicbase answers the refresh with a new refresh token but no usable access token
    apicbase.scripted.append((200, {"refresh_token": "refresh-x", "expires_in": WEEK, "token_type": "Bearer"}, {}))
    # When the connection is refreshed
    result = refresh_due(deps)
    # Then the new refresh token is stored (the old one may be revoked), the access token is
    # unusable and expires at once, so the next use refreshes it away
    assert result.outcome == REFRESHED
    assert stored_pair(deps, CID) == TokenPair("", "refresh-x")
    assert deps.connections.get(CID).expires_at <= int(clock())


def test_429_sets_the_next_attempt_after_retry_after_and_counts_failures(deps, apicbase, clock, due):
    # Given Apicbase rate-limits two refreshes in a row, asking for 15 minutes
    apicbase.scripted += [(429, {"detail": "Request was throttled."}, {"Retry-After": "900"})] * 2
    for failures in (1, 2):
        now = int(clock())
        # When the connection is refreshed
        with pytest.raises(RateLimited):
            refresh_due(deps)
        # Then the next attempt is no sooner than Retry-After, and the failures are counted
        failed = deps.connections.get(CID)
        assert failed.next_attempt_at >= now + 900
        assert (failed.status, failed.consecutive_failures, failed.last_error) == (ACTIVE, failures, "rate_limited")
        clock.advance(901)


def test_a_transient_5xx_keeps_the_status_and_backs_off_within_the_jitter_bounds(deps, apicbase, clock, due):
    # Given Apicbase answers 503
    apicbase.scripted.append((503, "Service Unavailable", {}))
    now = int(clock())
    # When the connection is refreshed
    with pytest.raises(ApicbaseUnavailable):
        refresh_due(deps)
    # Then it stays active, one failure is counted and the first backoff is half to all of the base
    failed = deps.connections.get(CID)
    assert (failed.status, failed.consecutive_failures, failed.lease_owner) == (ACTIVE, 1, None)
    assert now + BACKOFF_BASE_SECONDS // 2 <= failed.next_attempt_at <= now + BACKOFF_BASE_SECONDS


@pytest.mark.parametrize("failures", [1, 2, 5, 9, 30])
def test_the_backoff_doubles_per_failure_with_jitter_and_a_ceiling(failures):
    # Given the number of consecutive failures
    ceiling = min(BACKOFF_BASE_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)
    # When backoffs are drawn
    drawn = {backoff_seconds(failures) for _ in range(200)}
    # Then each lies between half the ceiling and the ceiling, and Retry-After wins when longer
    assert ceiling // 2 <= min(drawn) <= max(drawn) <= ceiling
    assert backoff_seconds(failures, retry_after=BACKOFF_MAX_SECONDS * 2, rand=1.0) == BACKOFF_MAX_SECONDS * 2


def test_the_refresh_failing_event_is_emitted_once_at_the_threshold(deps, apicbase, clock, due, sink):
    # Given Apicbase keeps failing, past the warning threshold
    threshold = deps.settings.failure_warning_threshold
    apicbase.scripted += [(502, "Bad Gateway", {})] * (threshold + 2)
    # When the connection is refreshed again after each backoff
    for _ in range(threshold + 2):
        with pytest.raises(ApicbaseUnavailable):
            refresh_due(deps)
        clock.advance(BACKOFF_MAX_SECONDS)
    # Then exactly one warning event reached EventBridge, from the stack's source
    events = sink.of_type(REFRESH_FAILING)
    assert len(events) == 1
    assert events[0]["source"] == deps.settings.event_source
    assert events[0]["detail"]["connection_id"] == CID
    assert events[0]["detail"]["consecutive_failures"] == threshold


# --- invalid_grant --------------------------------------------------------------------------------
def test_invalid_grant_after_a_concurrent_rotation_is_recovered(deps, apicbase, due, sink, monkeypatch):
    # Given an Apicbase without reuse protection, and another refresher that presents the same
    # refresh token first and stores the rotated pair between our lease and Apicbase's answer to
    # us (single flight prevents this; the store must still be the witness if it ever happens)
    apicbase.reuse_protection, apicbase.reuse_expected = False, True
    original = deps.apicbase.refresh

    def another_refresher_wins_the_race(credentials: Any, *, refresh_token: str) -> Any:
        monkeypatch.setattr(deps.apicbase, "refresh", original)
        refresh_elsewhere(deps, CID, refresh_token)
        return original(credentials, refresh_token=refresh_token)  # our token is revoked now

    monkeypatch.setattr(deps.apicbase, "refresh", another_refresher_wins_the_race)
    # When the connection is refreshed and Apicbase says invalid_grant
    result = refresh_due(deps)
    # Then the store shows the newer pair: success, no reauthorization
    assert result.outcome == ROTATED_ELSEWHERE
    assert deps.connections.get(CID).status == ACTIVE
    assert stored_pair(deps, CID).refresh_token == apicbase.issued_refresh_tokens[-1]
    assert sink.of_type(REAUTHORIZATION_REQUIRED) == []


@pytest.fixture
def revoked(deps, apicbase, due, sink, metric_set):
    """Given the person revoked the grant in Apicbase, and the connection was then refreshed."""
    apicbase.revoke_all()
    with pytest.raises(NeedsReauthorization):
        refresh_due(deps)


def test_a_revoked_grant_marks_the_connection_and_takes_it_out_of_the_refresh_index(deps, revoked, clock):
    # Then the connection needs reauthorization and the scheduler no longer finds it
    connection = deps.connections.get(CID)
    assert (connection.status, connection.reauthorization_reason) == (NEEDS_REAUTHORIZATION, "refresh_token_rejected")
    far = int(clock()) + 365 * 86400
    assert CID not in set(deps.connections.due_connections(due_before=far, now=far))


def test_a_revoked_grant_counts_the_reauthorization_metric(revoked, metric_set):
    # Then the metric (alarmed) counts it
    assert metric_set["ReauthorizationRequired"]["Value"] == [1.0]


def test_a_revoked_grant_is_announced_from_the_table(deps, apicbase, revoked, sink):
    # Then one event from the stack's source says who must reconnect
    [event] = sink.of_type(REAUTHORIZATION_REQUIRED)
    assert event["source"] == deps.settings.event_source
    assert {k: event["detail"][k] for k in ("connection_id", "application", "username", "reason")} == {
        "connection_id": CID,
        "application": "default",
        "username": apicbase.username,
        "reason": "refresh_token_rejected",
    }


def test_get_token_answers_409_after_a_revocation(deps, revoked):
    # When a token is asked for
    with pytest.raises(NeedsReauthorization) as raised:
        tokens.get_token(deps, CID)
    # Then the answer is 409 needs_reauthorization
    assert (answers.status_of(raised.value), raised.value.code) == (409, "needs_reauthorization")


# --- invalid_client -------------------------------------------------------------------------------
def test_invalid_client_rereads_the_secret_once_then_fails_loudly(deps, apicbase, due, calls, logs, metric_set):
    # Given Apicbase no longer accepts the client secret, and the secret was not rotated here
    deps.credentials.get("default")  # the container's cache is warm
    apicbase.client_secret = "secret-only-apicbase-knows"
    calls.reset()
    # When the connection is refreshed
    with pytest.raises(InvalidClient):
        refresh_due(deps)
    # Then the secret was re-read once, Apicbase was asked once, and the failure is loud
    assert calls.count("secretsmanager", "GetSecretValue") == 1
    assert apicbase.refresh_requests == 1
    assert metric_set["InvalidClient"]["Value"] == [1.0]
    assert any("client credentials" in r["message"] for r in logs.at("ERROR"))
    # But the connection is not marked dead: the secret is wrong, not the grant
    connection = deps.connections.get(CID)
    assert (connection.status, connection.last_error) == (ACTIVE, "invalid_client")
    assert stored_pair(deps, CID) == due


def test_invalid_client_retries_once_with_a_secret_rotated_meanwhile(deps, apicbase, aws, due, calls):
    # Given the secret was rotated in Apicbase and in Secrets Manager after this container cached it
    deps.credentials.get("default")
    rotated = "secret-rotated-9876543210"
    apicbase.client_secret = rotated
    aws.session.client("secretsmanager").put_secret_value(
        SecretId=deps.settings.client_secret_id,
        SecretString=json.dumps({"default": {"client_id": fakes.CLIENT_ID, "client_secret": rotated}}),
    )
    calls.reset()
    # When the connection is refreshed
    result = refresh_due(deps)
    # Then the rejected attempt leads to one re-read of the secret and one retry that succeeds
    assert result.outcome == REFRESHED
    assert calls.count("secretsmanager", "GetSecretValue") == 1
    assert apicbase.refresh_requests == 2
    assert stored_pair(deps, CID).refresh_token == apicbase.issued_refresh_tokens[-1]


# --- a crash between Apicbase's answer and the write ----------------------------------------------
@pytest.fixture
def crashed(deps, apicbase, due, monkeypatch, logs):
    """Given Apicbase rotated the refresh token and the process died before the write landed.

    The answer is lost with the process. The lease is left behind: it witnesses the interrupted
    refresh, and the old access token (deleted by the rotation) tells what happened."""

    def the_process_dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(deps.connections, "save_refreshed", the_process_dies)
        with pytest.raises(RuntimeError):
            refresh_due(deps)


def test_a_crash_after_apicbase_answered_leaves_the_lease_as_the_witness(deps, apicbase, crashed, logs):
    # Then the lease is still held (nobody else presents anything until it lapses)
    assert deps.connections.get(CID).lease_owner is not None
    # And neither token issued in the lost answer is logged
    assert apicbase.issued_refresh_tokens[-1] not in logs.text
    # And the window is real: the stored refresh token was revoked by the rotation
    assert stored_pair(deps, CID).refresh_token not in apicbase.live_refresh_tokens


def test_after_a_crash_the_next_refresh_says_rotation_answer_lost_without_presenting_anything(
    deps, apicbase, crashed, clock, sink
):
    # When the lease has lapsed and the connection is refreshed again
    clock.advance(deps.settings.lease_seconds + 1)
    presented = apicbase.refresh_requests
    with pytest.raises(NeedsReauthorization):
        refresh_due(deps)
    # Then the old access token's introspection told the rotation happened: the connection says so,
    # in the store and in the event, and the consumed refresh token was never presented again
    assert deps.connections.get(CID).reauthorization_reason == "rotation_answer_lost"
    [event] = sink.of_type(REAUTHORIZATION_REQUIRED)
    assert event["detail"]["reason"] == "rotation_answer_lost"
    assert (apicbase.refresh_requests, apicbase.reuses) == (presented, 0)


def test_after_a_crash_an_unanswered_introspection_presents_nothing_and_keeps_the_witness(
    deps, apicbase, crashed, clock
):
    # Given the lease has lapsed and the introspection endpoint is down
    clock.advance(deps.settings.lease_seconds + 1)
    apicbase.introspection_down = True
    presented = apicbase.refresh_requests
    # When the connection is refreshed
    with pytest.raises(ApicbaseUnavailable):
        refresh_due(deps)
    # Then nothing was presented, and the next refresh (introspection back) still resolves it
    assert apicbase.refresh_requests == presented
    apicbase.introspection_down = False
    with pytest.raises(NeedsReauthorization):
        refresh_due(deps)
    assert deps.connections.get(CID).reauthorization_reason == "rotation_answer_lost"
    assert (apicbase.refresh_requests, apicbase.reuses) == (presented, 0)


def test_after_a_crash_reconnecting_makes_the_connection_active_again(deps, apicbase, crashed, clock):
    # Given the crash led to needs_reauthorization
    clock.advance(deps.settings.lease_seconds + 1)
    with pytest.raises(NeedsReauthorization):
        refresh_due(deps)
    # When the person connects again through the callback
    state, binder = open_in_browser(deps, CID)
    connect.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    # Then the connection is active and refreshes again
    assert deps.connections.get(CID).status == ACTIVE
    assert admin.force_refresh(deps, CID).outcome == REFRESHED
    assert stored_pair(deps, CID).refresh_token == apicbase.issued_refresh_tokens[-1]


# --- a throttled write ----------------------------------------------------------------------------
def test_a_throttled_persist_is_retried_with_backoff_and_lands(deps, apicbase, clock, due, calls, logs):
    # Given DynamoDB throttles the write of the refreshed pair three times
    def is_persist(params: dict[str, Any]) -> bool:
        return "last_refresh_at" in params.get("UpdateExpression", "")

    calls.fail("UpdateItem", "ProvisionedThroughputExceededException", times=3, when=is_persist)
    sleeps: list[float] = []
    deps.sleep = lambda seconds: (sleeps.append(seconds), clock.advance(seconds))  # type: ignore[func-returns-value]
    # When the connection is refreshed
    result = refresh_due(deps)
    # Then the write was retried after growing pauses and the rotated refresh token is stored
    assert result.outcome == REFRESHED
    assert sleeps == [0.05, 0.1, 0.2]
    assert sum(1 for _, op, params in calls.calls if op == "UpdateItem" and is_persist(params)) == 4
    rotated = apicbase.issued_refresh_tokens[-1]
    assert stored_pair(deps, CID).refresh_token == rotated
    # And the rotated refresh token never reached a log line
    assert rotated not in logs.text


# --- what one refresh costs -----------------------------------------------------------------------
class Calls(NamedTuple):
    dynamodb_reads: int
    dynamodb_writes: int
    kms_decrypts: int
    kms_data_keys: int
    secret_reads: int
    events_put: int


@dataclass(frozen=True)
class Cost:
    expires_in: int
    warm_secret: bool
    run: Callable[[Any], str]
    outcome: str
    calls: Calls
    apicbase_answers: Callable[[fakes.FakeApicbase], None] = lambda apicbase: None
    # Another container than the one that sealed the pair: its data-key cache is cold.
    other_container: bool = True


def _scheduled(deps: Any) -> str:
    return refresh_from_message(deps, encode(CID, int(deps.now())))


def _on_demand(deps: Any) -> str:
    return REFRESHED if tokens.get_token(deps, CID).expires_at - int(deps.now()) == WEEK else "not refreshed"


def _admin(deps: Any) -> str:
    return admin.force_refresh(deps, CID).outcome


def _revoke(apicbase: fakes.FakeApicbase) -> None:
    apicbase.revoke_all()


def _unavailable(apicbase: fakes.FakeApicbase) -> None:
    apicbase.scripted.append((503, "Service Unavailable", {}))


COSTS = {
    # The lease's conditional UpdateItem returns the item (the re-read); the persist is the second
    # write. KMS: the stored pair's data key opened, and the new pair's taken before Apicbase is called.
    "scheduled, warm secret cache": Cost(DUE, True, _scheduled, REFRESHED, Calls(0, 2, 1, 1, 0, 0)),
    "scheduled, cold secret cache": Cost(DUE, False, _scheduled, REFRESHED, Calls(0, 2, 1, 1, 1, 0)),
    # POST /connections/{id}/refresh: the lease write returns the item; nothing is read before it.
    "admin refresh, warm secret cache": Cost(DUE, True, _admin, REFRESHED, Calls(0, 2, 1, 1, 0, 0)),
    # GET /token reads the item first to see whether a refresh is due at all.
    "on demand, warm secret cache": Cost(60, True, _on_demand, REFRESHED, Calls(1, 2, 1, 1, 0, 0)),
    # The hot path: a fresh token in a warm container is one read, and no KMS call.
    "GET token, fresh, warm container": Cost(
        WEEK - 60, True, _on_demand, "not refreshed", Calls(1, 0, 0, 0, 0, 0), other_container=False
    ),
    # A duplicate delivery for a fresh token: lease and release, nothing decrypted.
    "duplicate delivery, already fresh": Cost(WEEK, True, _scheduled, ALREADY_FRESH, Calls(0, 2, 0, 0, 0, 0)),
    # A transient failure: the lease, then the failure recorded (which releases it).
    "scheduled, Apicbase 503": Cost(DUE, True, _scheduled, "raised", Calls(0, 2, 1, 1, 0, 0), _unavailable),
    # A revoked grant: the lease, the re-read that proves no one rotated it, the mark. No event:
    # the table's stream announces the mark (announce), so no flow puts one.
    "scheduled, grant revoked": Cost(DUE, True, _scheduled, "needs_reauthorization", Calls(1, 2, 1, 1, 0, 0), _revoke),
}


@pytest.mark.parametrize("name", COSTS)
def test_aws_calls_per_refresh(deps, apicbase, calls, name):
    # Given a connection in the case's state, the secret cache warm or cold, and Apicbase's answer
    cost = COSTS[name]
    seed(deps, apicbase, CID, expires_in=cost.expires_in)
    if cost.other_container:
        deps.cipher = TokenCipher(deps.cipher.kms, deps.cipher.key_id)
    if cost.warm_secret:
        deps.credentials.get("default")
    cost.apicbase_answers(apicbase)
    calls.reset()
    # When it is refreshed
    try:
        outcome = cost.run(deps)
    except ApicbaseUnavailable:
        outcome = "raised"
    # Then it made exactly these AWS calls, and no others
    counted = ("dynamodb", "kms", "secretsmanager", "events")
    assert outcome == cost.outcome
    assert len(calls.calls) == sum(calls.count(service) for service in counted)
    assert cost.calls == Calls(
        dynamodb_reads=calls.count("dynamodb", *DYNAMODB_READS),
        dynamodb_writes=calls.count("dynamodb", *DYNAMODB_WRITES),
        kms_decrypts=calls.count("kms", "Decrypt"),
        kms_data_keys=calls.count("kms", "GenerateDataKey"),
        secret_reads=calls.count("secretsmanager", "GetSecretValue"),
        events_put=calls.count("events", "PutEvents"),
    )


@pytest.mark.parametrize("answers", [_unavailable, lambda apicbase: None], ids=["apicbase 503", "refreshed"])
def test_the_admin_refresh_writes_the_lease_before_any_dynamodb_read(deps, apicbase, calls, answers):
    # Given a connection, and Apicbase answering or failing
    seed(deps, apicbase, CID, expires_in=DUE)
    answers(apicbase)
    calls.reset()
    # When an administrator refreshes it
    with contextlib.suppress(ApicbaseUnavailable):
        admin.force_refresh(deps, CID)
    # Then the first DynamoDB call is the lease's conditional write: no GetItem before it
    dynamodb = [(operation, params) for service, operation, params in calls.calls if service == "dynamodb"]
    operation, params = dynamodb[0]
    assert operation == "UpdateItem"
    assert "lease_owner = :owner" in params["UpdateExpression"]


def test_the_admin_refresh_while_apicbase_asks_to_wait_gives_the_lease_back_and_keeps_the_witness(
    deps, apicbase, clock
):
    # Given a connection whose refresh was interrupted, then answered 429 with a Retry-After
    seed(deps, apicbase, CID, expires_in=DUE)
    hold_lease(deps, CID)
    clock.advance(deps.settings.lease_seconds + 1)
    deps.connections.take_lease(CID, "me", deps.settings.lease_seconds)
    connection = deps.connections.get(CID)
    deps.connections.record_failure(
        connection,
        "me",
        error="rate_limited",
        next_attempt_at=int(clock()) + 120,
        interrupted=connection.interrupted_lease_until,
    )
    presented = apicbase.refresh_requests
    # When an administrator refreshes it
    with pytest.raises(RateLimited) as raised:
        admin.force_refresh(deps, CID)
    # Then Apicbase's wait is passed on, nothing was presented, the lease is free and the lapsed
    # lease (the witness) is still there for the next refresher
    assert 0 < raised.value.retry_after <= 120
    assert apicbase.refresh_requests == presented
    after = deps.connections.get(CID)
    assert after.lease_owner is None
    assert after.lease_until is not None and after.lease_until < int(clock())
