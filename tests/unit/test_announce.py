"""Connection events from the table's stream: what each change means, that an event reaches the
integrator at least once (a writer killed after its write, the events function killed after it
put them, EventBridge failing for good), once per event_id after deduplication, and that no
event ever carries a token."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apicbase_oauth import admin, announce
from apicbase_oauth.adapters import events
from apicbase_oauth.adapters.stream import ConnectionChange, ConnectionImage, parse_record
from apicbase_oauth.errors import InvalidRequest, NeedsReauthorization
from apicbase_oauth.model import Rescue
from tests import fakes
from tests.unit.stream_support import EVENTS_FUNCTION, Feed, imported

THRESHOLD = 5


class Killed(BaseException):
    """The process dies here (not an Exception: nothing on the way may handle it)."""


def image(version: int = 1, **fields: Any) -> ConnectionImage:
    values: dict[str, Any] = {
        "connection_id": "lib-1",
        "application": "default",
        "client_id": fakes.CLIENT_ID,
        "status": "active",
        "version": version,
        "username": "chef@example.com",
        "source": "callback",
    }
    return ConnectionImage(**{**values, **fields})


def change(old: ConnectionImage | None, new: ConnectionImage | None, event_id: str = "e1") -> ConnectionChange:
    return ConnectionChange(event_id=event_id, sequence_number="1", connection_id="lib-1", at=0.0, old=old, new=new)


def kinds(old: ConnectionImage | None, new: ConnectionImage | None) -> list[str]:
    derived = announce.derive(change(old, new), failure_threshold=THRESHOLD)
    return [event.detail_type.removeprefix("Apicbase Connection ") for event in derived]


# --- what a change means ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, image(), ["Created"]),
        (image(), None, ["Disconnected"]),
        (image(1), image(2, previous_username="chef@example.com"), ["Created"]),
        (image(1), image(2, refresh_count=1), []),
        (image(2, refresh_count=1), image(2, refresh_count=1, last_error="x"), []),
        (
            image(1),
            image(1, status="needs_reauthorization", reauthorization_reason="refresh_token_rejected"),
            ["Reauthorization Required"],
        ),
        (
            image(1, consecutive_failures=4),
            image(1, consecutive_failures=5, last_error="apicbase_unavailable"),
            ["Refresh Failing"],
        ),
        (image(1, consecutive_failures=5), image(1, consecutive_failures=6), []),
        (image(1, consecutive_failures=7), image(2, refresh_count=1), ["Recovered"]),
        (image(1, consecutive_failures=3), image(2, refresh_count=1), []),
        (image(1, status="needs_reauthorization"), image(2), ["Created", "Recovered"]),
        (
            image(1, username="chef@example.com"),
            image(2, previous_username="chef@example.com", username="other@example.com"),
            ["Created", "Identity Changed"],
        ),
        (
            image(2, previous_username="chef@example.com", username=None),
            image(2, previous_username="chef@example.com", username="other@example.com"),
            ["Identity Changed"],
        ),
        (
            image(2, previous_username="chef@example.com", username="other@example.com"),
            image(3, previous_username="chef@example.com", username="other@example.com", refresh_count=1),
            [],
        ),
    ],
    ids=[
        "insert-is-created",
        "remove-is-disconnected",
        "grant-over-a-connection-is-a-reconnect",
        "refresh-says-nothing",
        "a-lease-or-a-failure-below-the-threshold-says-nothing",
        "marked-needs-reauthorization",
        "failures-reach-the-threshold",
        "failures-beyond-the-threshold-say-it-once",
        "a-failing-connection-refreshes-again",
        "a-refresh-after-failures-below-the-threshold",
        "needs-reauthorization-connected-again",
        "reconnected-as-another-user",
        "another-user-seen-by-introspection-after-the-grant",
        "a-later-refresh-does-not-repeat-it",
    ],
)
def test_each_change_means_its_events(old, new, expected) -> None:
    # Given a connection item before and after a write, When its events are derived, Then they are exactly these
    assert kinds(old, new) == expected


def test_a_recovery_says_from_what_and_how() -> None:
    # Given a connection that needed reauthorization, When a pasted code connects it again
    derived = announce.derive(
        change(image(1, status="needs_reauthorization"), image(2, source="pasted_code")), failure_threshold=THRESHOLD
    )
    # Then it is a reconnect, and a recovery from needs_reauthorization via the pasted code
    created, recovered = (event.detail for event in derived)
    assert created["reconnected"] is True
    assert (recovered["recovered_from"], recovered["via"]) == ("needs_reauthorization", "pasted_code")


def test_event_ids_are_the_record_and_the_kind_so_every_delivery_has_the_same() -> None:
    # Given one record derived twice (a redelivery), and another record of the same change kind
    first = announce.derive(change(None, image(), "rec-1"), failure_threshold=THRESHOLD)
    again = announce.derive(change(None, image(), "rec-1"), failure_threshold=THRESHOLD)
    other = announce.derive(change(None, image(), "rec-2"), failure_threshold=THRESHOLD)
    # Then the redelivery has the same id, the other record another one
    assert [e.detail["event_id"] for e in first] == [e.detail["event_id"] for e in again] == ["rec-1.created"]
    assert other[0].detail["event_id"] == "rec-2.created"


def test_a_delete_then_a_reconnect_is_disconnected_then_created_with_new_ids(deps, apicbase, feed, consumer) -> None:
    # Given a connection deleted and connected again under the same id
    imported(deps, apicbase)
    admin.disconnect(deps, "lib-1")
    imported(deps, apicbase)
    # When the stream is delivered
    feed.drain()
    # Then the integrator sees Created, Disconnected, Created (a first connect again), three ids
    assert [(e["detail-type"], e["detail"].get("reconnected")) for e in consumer.deduplicated()] == [
        (events.CONNECTION_CREATED, False),
        (events.CONNECTION_DISCONNECTED, None),
        (events.CONNECTION_CREATED, False),
    ]


# --- at least once ------------------------------------------------------------------------------
def test_a_writer_killed_right_after_its_write_still_has_its_event_announced(
    deps, apicbase, feed, consumer, monkeypatch
) -> None:
    # Given a connection whose grant Apicbase revoked, and a refresher that dies right after it
    # marked the connection needs_reauthorization (before anything else runs)
    imported(deps, apicbase)
    apicbase.revoke_all()
    mark = deps.connections.mark_for_reauthorization

    def mark_then_die(*args: Any, **kwargs: Any) -> Any:
        mark(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(deps.connections, "mark_for_reauthorization", mark_then_die)
    with pytest.raises(Killed):
        admin.force_refresh(deps, "lib-1")
    # When the stream is delivered
    feed.drain()
    # Then the integrator receives Reauthorization Required, once
    (event,) = consumer.of_type(events.REAUTHORIZATION_REQUIRED)
    assert event["detail"]["reason"] == "refresh_token_rejected"


def test_the_events_function_killed_after_putting_has_them_put_again_under_the_same_ids(
    aws, template, deps, apicbase, events_handler, consumer
) -> None:
    # Given an events function whose process dies once after its PutEvents, before it answers
    deaths: list[int] = []

    def put_then_die(event: dict[str, Any]) -> Any:
        answer = events_handler(event)
        if not deaths:
            deaths.append(1)
            raise RuntimeError("the function's process died")  # what the pool reports to the poller
        return answer

    feed = Feed(aws, template, put_then_die)
    imported(deps, apicbase)
    # When the stream is delivered (Lambda delivers the batch again)
    feed.drain()
    # Then the event arrived twice, and once after deduplication by event_id
    created = consumer.of_type(events.CONNECTION_CREATED)
    assert deaths == [1]
    assert len(created) == 2
    assert len({e["detail"]["event_id"] for e in created}) == 1


def _fail_put_events(deps_or_client: Any, monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    calls: list[int] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise error

    monkeypatch.setattr(deps_or_client, "put_events", refuse)
    return calls


def test_put_events_failing_for_good_dead_letters_the_batch_and_a_replay_announces_it_once(
    aws, template, deps, apicbase, load_handler, lambda_context, consumer, monkeypatch
) -> None:
    # Given EventBridge down for longer than the event source retries (3 here, 10,000 deployed)
    module = load_handler(EVENTS_FUNCTION)
    handler = lambda event: module.lambda_handler(event, lambda_context)  # noqa: E731
    feed = Feed(aws, template, handler, max_retries=3)
    with monkeypatch.context() as down:
        refused = _fail_put_events(module.DEPS.events.events, down, EndpointConnectionError(endpoint_url="events"))
        imported(deps, apicbase)
        apicbase.revoke_all()
        with pytest.raises(NeedsReauthorization):
            admin.force_refresh(deps, "lib-1")
        # When the stream is delivered
        feed.drain()
    # Then nothing arrived, and the batch went to the dead-letter queue after 1 + 3 attempts
    assert consumer.received() == []
    assert len(refused) == 4
    assert feed.poller.given_up == 1
    # When EventBridge is back and an operator replays the dead-letter queue
    answer = handler(announce.REPLAY_REQUEST)
    # Then each event arrives once, the dead-letter queue is empty, and a second replay does nothing
    assert answer == {"replayed": 1, "lost": 0, "not_ours": 0, "failed": 0}
    assert [e["detail-type"] for e in consumer.deduplicated()] == [
        events.CONNECTION_CREATED,
        events.REAUTHORIZATION_REQUIRED,
    ]
    assert handler(announce.REPLAY_REQUEST)["replayed"] == 0


def test_a_refused_entry_is_the_record_lambda_delivers_again(
    aws, deps, apicbase, load_handler, lambda_context, monkeypatch
) -> None:
    # Given PutEvents that takes the first entry and refuses the second
    module = load_handler(EVENTS_FUNCTION)
    put = module.DEPS.events.events.put_events

    def half(Entries: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        put(Entries=Entries[:1], **kwargs)
        return {"FailedEntryCount": 1, "Entries": [{"EventId": "x"}, {"ErrorCode": "InternalFailure"}]}

    monkeypatch.setattr(module.DEPS.events.events, "put_events", half)
    records = [
        _record("r1", None, _item(version=1)),
        _record("r2", None, _item(connection_id="lib-2", version=1), seq="2"),
    ]
    # When the batch is handled
    answer = module.lambda_handler({"Records": records}, lambda_context)
    # Then the record of the refused event is the batch item failure
    assert answer == {"batchItemFailures": [{"itemIdentifier": "2"}]}


# --- input that is not ours, and what never leaves ----------------------------------------------
def _item(connection_id: str = "lib-1", version: int = 1, **extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "pk": {"S": f"CONN#{connection_id}"},
        "entity": {"S": "connection"},
        "connection_id": {"S": connection_id},
        "application": {"S": "default"},
        "client_id": {"S": fakes.CLIENT_ID},
        "status": {"S": "active"},
        "version": {"N": str(version)},
        "source": {"S": "callback"},
        "tokens": {"B": base64.b64encode(b"sealed-tokens-never-leave").decode()},
        **extra,
    }


def _record(event_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None, seq: str = "1") -> dict[str, Any]:
    item = new or old
    assert item is not None
    body: dict[str, Any] = {"Keys": {"pk": item["pk"]}, "SequenceNumber": seq, "ApproximateCreationDateTime": 1.8e9}
    if old is not None:
        body["OldImage"] = old
    if new is not None:
        body["NewImage"] = new
    name = "MODIFY" if old and new else "INSERT" if new else "REMOVE"
    return {"eventID": event_id, "eventName": name, "eventSource": "aws:dynamodb", "dynamodb": body}


@pytest.mark.parametrize(
    "broken",
    [
        "not a record",
        {"eventID": "r0", "eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "CONN#lib-0"}}}},
        _record("r0", None, {**_item(), "version": {"S": "1"}}),
        _record("r0", None, {**_item(), "connection_id": {"S": "lib-9"}}),
        _record("bad id!", None, _item()),
        _record("r0", None, {**_item(), "username": {"S": "x" * 1000}}),
    ],
    ids=["not-a-map", "no-sequence", "version-not-a-number", "id-not-its-key", "bad-event-id", "oversized"],
)
def test_a_record_not_of_our_shape_is_skipped_without_holding_up_the_rest(
    broken, load_handler, lambda_context, consumer
) -> None:
    # Given a batch with a broken record before a good one
    module = load_handler(EVENTS_FUNCTION)
    # When it is handled
    answer = module.lambda_handler({"Records": [broken, _record("r1", None, _item())]}, lambda_context)
    # Then the good record's event is put and nothing is delivered again
    assert answer == {"batchItemFailures": []}
    assert [e["detail"]["event_id"] for e in consumer.received()] == ["r1.created"]


def test_a_connection_left_without_its_tokens_is_disconnected() -> None:
    # Given a delete that leaves the item as a tombstone (no tokens) rather than removing it
    tombstone = {k: v for k, v in _item(version=3).items() if k != "tokens"}
    parsed = parse_record(_record("r1", _item(version=3), tombstone))
    # Then it is announced as Disconnected, and a grant over the tombstone as a new connection
    assert parsed is not None
    derived = announce.derive(parsed, failure_threshold=THRESHOLD)
    assert [e.detail_type for e in derived] == [events.CONNECTION_DISCONNECTED]
    again = parse_record(_record("r2", tombstone, _item(version=4)))
    assert again is not None
    (created,) = announce.derive(again, failure_threshold=THRESHOLD)
    assert created.detail["reconnected"] is False


def test_records_of_other_items_mean_nothing() -> None:
    # Given a state's record, Then it is no connection change
    state = {"pk": {"S": "STATE#" + "0" * 64}, "connection_id": {"S": "lib-1"}}
    assert parse_record(_record("r1", None, state)) is None


def test_an_event_that_is_neither_a_batch_nor_a_replay_is_refused(load_handler, lambda_context) -> None:
    module = load_handler(EVENTS_FUNCTION)
    with pytest.raises(InvalidRequest):
        module.lambda_handler({"replay": "everything"}, lambda_context)


_text = st.text(min_size=1, max_size=40).filter(str.isprintable)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    extra=st.dictionaries(
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True).filter(lambda k: k not in _item()),
        st.one_of(
            _text.map(lambda s: {"S": "SECRET" + s}),
            st.binary(min_size=1).map(lambda b: {"B": base64.b64encode(b).decode()}),
        ),
        max_size=6,
    ),
    failures=st.integers(0, 9),
    status=st.sampled_from(["active", "needs_reauthorization"]),
)
def test_no_event_carries_anything_but_allow_listed_attributes(extra, failures, status) -> None:
    # Given images that also carry sealed tokens and attributes of any name
    old = {**_item(version=1), "consecutive_failures": {"N": str(failures)}, **extra}
    new = {**_item(version=2), "status": {"S": status}, "consecutive_failures": {"N": "0"}, **extra}
    # When every kind of change is derived from them
    derived = []
    for record in (_record("r", None, new), _record("r", old, new), _record("r", old, None)):
        parsed = parse_record(record)
        assert parsed is not None
        derived += announce.derive(parsed, failure_threshold=THRESHOLD)
    # Then no event holds the tokens or any attribute outside the allow-list
    text = json.dumps([event.detail for event in derived])
    assert derived
    assert "SECRET" not in text
    assert base64.b64encode(b"sealed-tokens-never-leave").decode() not in text
    assert all(value["B"] not in text for value in extra.values() if "B" in value)


@pytest.mark.parametrize(("kind", "expected"), [("refresh", []), ("grant", [events.CONNECTION_CREATED])])
def test_a_parked_pair_applied_is_announced_as_what_it_is(
    deps, apicbase, clock, feed, consumer, kind, expected
) -> None:
    # Given a connection, and a pair parked for it (custody's rescue place) by a refresh or a grant
    imported(deps, apicbase)
    connection = deps.connections.get("lib-1")
    feed.drain()
    consumer.received()
    clock.advance(5)
    rescue = Rescue(
        connection_id="lib-1",
        kind=kind,
        tokens=connection.tokens,
        generation=connection.generation,
        base_version=connection.version,
        application=connection.application,
        client_id=connection.client_id,
        expires_at=connection.expires_at,
        scope=connection.scope,
        username=connection.username,
        source="callback",
        parked_at=int(clock()),
    )
    # When it is applied
    deps.connections.apply_parked(rescue)
    feed.drain()
    # Then a refresh's pair is no new connection, and a grant's is
    assert [e["detail-type"] for e in consumer.deduplicated()[1:]] == expected
