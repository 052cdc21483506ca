"""Custody: time first, the answer sealed and saved first, a write that never lands
parked and applied later, and an unknown outcome resolved by the old access token."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from local.lambda_context import LambdaContext

from apicbase_oauth import admin
from apicbase_oauth.adapters.queue import decode, encode, encode_rescue
from apicbase_oauth.errors import ApicbaseUnavailable, NeedsReauthorization, OutOfTime, TokensParked
from apicbase_oauth.freshness import Purpose
from apicbase_oauth.model import MAX_TOKEN_LENGTH, Grant, Rescue, TokenPair
from apicbase_oauth.refresh import refresh_connection
from apicbase_oauth.schedule import refresh_from_message
from tests.conftest import load_event
from tests.unit.refresh_support import AwsCalls, EventSink, drain, real_clock, seed, stored_pair

CID = "lib-42"
DUE = 3600


def refresh_due(deps: Any) -> Any:
    return refresh_connection(deps, CID, Purpose("due", deps.settings.schedule_margin_seconds))


def sqs_event(*bodies: str) -> dict[str, Any]:
    record = load_event("sqs_refresh_batch.json")["Records"][0]
    return {"Records": [{**copy.deepcopy(record), "messageId": f"m-{i}", "body": b} for i, b in enumerate(bodies)]}


# --- time first ------------------------------------------------------------------------------------
def test_a_refresh_without_the_time_to_store_its_answer_presents_nothing_and_takes_no_lease(deps, apicbase):
    # Given a due connection and a function with 20 s left (a refresh may take 36 s)
    seed(deps, apicbase, CID, expires_in=DUE)
    deps.time_left = lambda: 20.0
    # When it is refreshed
    with pytest.raises(OutOfTime):
        refresh_due(deps)
    # Then Apicbase saw nothing and no lease was left behind
    assert apicbase.token_requests == 0
    assert deps.connections.get(CID).lease_owner is None


def test_a_lease_about_to_lapse_is_not_enough_time_either(deps, apicbase, clock):
    # Given a due connection whose lease (taken now) would lapse in 10 s, in an unhurried function
    seed(deps, apicbase, CID, expires_in=DUE)
    deps.settings = dataclasses.replace(deps.settings, lease_seconds=10)
    # When it is refreshed
    with pytest.raises(OutOfTime):
        refresh_due(deps)
    # Then nothing was presented and the lease was given back
    assert apicbase.token_requests == 0
    assert deps.connections.get(CID).lease_owner is None


def test_the_worker_hands_back_the_records_it_has_no_time_for(load_handler, deps, apicbase, monkeypatch):
    # Given two due connections, and a worker invocation with 30 s left of its 60
    clock = real_clock()
    worker = load_handler("RefreshWorkerFunction")
    for cid in ("lib-a", "lib-b"):
        seed(worker.DEPS, apicbase, cid, expires_in=DUE)
    context = LambdaContext("RefreshWorkerFunction", 512, 60, clock=clock)
    clock.advance(30)
    # When the worker gets both records
    response = worker.lambda_handler(sqs_event(encode("lib-a", int(clock())), encode("lib-b", int(clock()))), context)
    # Then both are handed back to SQS untouched, and Apicbase saw nothing
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["m-0", "m-1"]
    assert apicbase.token_requests == 0


# --- the answer lost in transit ------------------------------------------------------------------
def test_an_answer_lost_in_transit_is_said_at_once_without_a_second_presentation(deps, apicbase, aws, settings, feed):
    # Given a due connection, and Apicbase that rotates the refresh token but whose answer is lost
    sink = EventSink(aws.session, settings.event_source, feed=feed)
    seed(deps, apicbase, CID, expires_in=DUE)
    apicbase.lose_answers = 1
    # When it is refreshed
    with pytest.raises(NeedsReauthorization):
        refresh_due(deps)
    # Then the old access token's introspection told it: rotation_answer_lost, in the same refresh,
    # and the consumed refresh token was presented once only
    assert deps.connections.get(CID).reauthorization_reason == "rotation_answer_lost"
    [event] = sink.of_type("Apicbase Connection Reauthorization Required")
    assert event["detail"]["reason"] == "rotation_answer_lost"
    assert (apicbase.refresh_requests, apicbase.reuses) == (1, 0)


def test_a_read_timeout_before_apicbase_did_anything_keeps_the_connection(deps, apicbase):
    # Given a due connection, and a read timeout that Apicbase never acted on (old token active)
    seeded = seed(deps, apicbase, CID, expires_in=DUE)
    apicbase.scripted.append((503, "Service Unavailable", {}))
    # When it is refreshed, and again later
    with pytest.raises(ApicbaseUnavailable):
        refresh_due(deps)
    assert stored_pair(deps, CID) == seeded
    assert refresh_due(deps).outcome == "refreshed"
    # Then the connection is alive and nothing was presented twice
    assert stored_pair(deps, CID).refresh_token in apicbase.live_refresh_tokens
    assert apicbase.reuses == 0


# --- a write that never lands -----------------------------------------------------------------------
def park_a_refresh(deps: Any, apicbase: Any, monkeypatch: Any, *, rescue_item_fails: bool = False) -> tuple[Any, str]:
    """A due connection refreshed while DynamoDB refuses its pair's write (and the rescue item,
    with ``rescue_item_fails``): the pair is parked. Returns the failing calls (clear them once
    DynamoDB is back) and the rotated refresh token."""
    seed(deps, apicbase, CID, expires_in=DUE)
    calls = AwsCalls(monkeypatch)
    calls.fail("UpdateItem", "InternalServerError", times=100, when=lambda p: ":tokens" in str(p))
    if rescue_item_fails:
        calls.fail("PutItem", "InternalServerError", times=100, when=lambda p: "RESCUE#" in str(p))
    with pytest.raises(TokensParked):
        refresh_due(deps)
    return calls, apicbase.issued_refresh_tokens[-1]


def test_a_write_that_never_lands_parks_the_pair_and_the_next_refresh_applies_it(deps, apicbase, clock, monkeypatch):
    # Given a due connection, and DynamoDB refusing every write of the refreshed pair
    # When it is refreshed
    calls, rotated = park_a_refresh(deps, apicbase, monkeypatch)
    # Then the sealed pair is parked, and the lease stays held so that nobody presents the old token
    parked = deps.connections.parked(CID)
    assert parked is not None and deps.cipher.decrypt(CID, parked.tokens).refresh_token == rotated
    assert deps.connections.get(CID).lease_owner is not None
    # And once DynamoDB is back and the lease has lapsed, the next refresh applies it first
    calls._failures.clear()
    clock.advance(deps.settings.lease_seconds + 1)
    presented = apicbase.refresh_requests
    assert refresh_due(deps).outcome == "rescued"
    assert stored_pair(deps, CID).refresh_token == rotated
    assert (apicbase.refresh_requests, apicbase.reuses) == (presented, 0)
    assert deps.connections.parked(CID) is None


def _queued(deps: Any) -> list[str]:
    return list(drain(deps.queue.sqs, deps.settings.refresh_queue_url))


def test_when_the_table_takes_neither_the_pair_nor_its_rescue_the_sqs_copy_keeps_it(deps, apicbase, monkeypatch):
    # Given a due connection, and DynamoDB refusing the refreshed pair's write and the rescue item
    # When it is refreshed
    calls, rotated = park_a_refresh(deps, apicbase, monkeypatch, rescue_item_fails=True)
    assert deps.connections.parked(CID) is None
    # Then the SQS copy holds the rotated pair, and the worker stores it once DynamoDB is back
    calls._failures.clear()
    assert [refresh_from_message(deps, body) for body in _queued(deps)] == ["rescued"]
    assert stored_pair(deps, CID).refresh_token == rotated
    assert apicbase.reuses == 0


def test_a_stale_parked_pair_never_overwrites_a_newer_pair_of_its_connection(deps, apicbase, clock, monkeypatch):
    # Given a refreshed pair parked (its write failed), applied by the next refresh, which a
    # later refresh rotated again
    calls, _ = park_a_refresh(deps, apicbase, monkeypatch)
    calls._failures.clear()
    stale = _queued(deps)  # the SQS copy, delivered late
    clock.advance(deps.settings.lease_seconds + 1)
    assert refresh_due(deps).outcome == "rescued"
    assert refresh_connection(deps, CID, Purpose("admin", 0, force=True)).outcome == "refreshed"
    newest = stored_pair(deps, CID)
    # When the stale copy arrives
    assert [refresh_from_message(deps, body) for body in stale] == ["rescue_stale"]
    # Then the newest pair stays, live
    assert stored_pair(deps, CID) == newest and newest.refresh_token in apicbase.live_refresh_tokens
    assert apicbase.reuses == 0


def test_the_reauthorization_mark_spares_a_pair_stored_meanwhile(deps, apicbase, clock):
    # Given a refresh whose answer is lost, and a newer pair of the connection stored (a parked
    # pair applied) while the old access token is being introspected
    seed(deps, apicbase, CID, expires_in=DUE)
    apicbase.lose_answers = 1
    newer = TokenPair(*apicbase.issue_pair())

    def meanwhile(form: dict[str, str]) -> None:
        if "token" in form and "grant_type" not in form and apicbase.on_form is not None:
            apicbase.on_form = None
            held = deps.connections.get(CID)
            deps.connections.save_refreshed(
                held, tokens=deps.cipher.encrypt(CID, newer), expires_at=int(clock()) + DUE, scope=None
            )

    apicbase.on_form = meanwhile
    # When the witness says the answer was lost
    result = refresh_due(deps)
    # Then the connection is not marked for reauthorization: it holds the newer pair, alive
    assert result.outcome == "rotated_elsewhere"
    assert deps.connections.get(CID).status == "active" and stored_pair(deps, CID) == newer


def test_a_parked_pair_carried_by_a_message_is_applied_by_the_worker(deps, apicbase, clock):
    # Given a connection, and a grant parked in an SQS message only (the table refused it)
    seed(deps, apicbase, CID, expires_in=DUE)
    pair = TokenPair(*apicbase.issue_pair())
    fields = {"connection_id": CID, "application": "default", "client_id": "client-default"}
    grant = Grant(**fields, tokens=b"", expires_at=int(clock()) + 7200, scope=None, username=None, source="callback")
    rescue = Rescue.of_grant(grant, parked_at=int(deps.now()))
    clock.advance(1)
    body = encode_rescue(dataclasses.replace(rescue, tokens=deps.cipher.encrypt(CID, pair)), int(clock()))
    # When the worker handles the message
    assert refresh_from_message(deps, body) == "rescued"
    # Then the connection holds the parked pair, and a second delivery changes nothing
    assert stored_pair(deps, CID) == pair
    assert refresh_from_message(deps, body) == "rescue_stale"
    assert stored_pair(deps, CID) == pair


def test_a_disconnect_forgets_a_parked_pair_and_revokes_it_too(deps, apicbase, clock):
    # Given a connection with a pair parked for it (its write had failed)
    seed(deps, apicbase, CID, expires_in=DUE)
    parked = TokenPair(*apicbase.issue_pair())
    fields = {"connection_id": CID, "application": "default", "client_id": "client-default"}
    grant = Grant(**fields, tokens=b"", expires_at=int(clock()) + 7200, scope=None, username=None, source="callback")
    rescue = Rescue.of_grant(grant, parked_at=int(deps.now()))
    deps.connections.park(dataclasses.replace(rescue, tokens=deps.cipher.encrypt(CID, parked)))
    # When the connection is disconnected
    admin.disconnect(deps, CID)
    # Then the parked pair cannot revive it, and its refresh token is no longer live at Apicbase
    assert deps.connections.parked(CID) is None
    assert parked.refresh_token not in apicbase.live_refresh_tokens


def test_a_parked_pair_of_the_longest_tokens_fits_one_message(deps, clock):
    # Given a pair of the longest tokens Apicbase may send, parked with the longest other fields
    pair = TokenPair("a" * MAX_TOKEN_LENGTH, "r" * MAX_TOKEN_LENGTH)
    cid = "c" * 128
    grant = Grant(
        cid,
        "default",
        "client-default",
        deps.cipher.encrypt(cid, pair),
        int(clock()) + 7200,
        "s" * 512,
        "u" * 256,
        "callback",
    )
    rescue = Rescue.of_grant(grant, parked_at=int(clock()))
    # When its SQS message is read back
    message = decode(encode_rescue(rescue, int(clock())))
    # Then it holds the whole sealed pair
    assert message.rescue is not None and vars(message.rescue) == vars(rescue)
    assert deps.cipher.decrypt(cid, message.rescue.tokens) == pair
