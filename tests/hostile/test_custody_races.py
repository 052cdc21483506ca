"""Custody against races the fault matrix does not make: a DELETE or a reconnect while a refresh
is in flight, a stale parked pair arriving after a reconnect, and the token handed out while a
pair is parked. Each race is placed exactly (``Fault.meanwhile``: another container's invocation
runs at a chosen attempt), through the real handlers, on moto and the strict fake Apicbase.

The connection's generation fences every late write: nothing from an older generation (a
refresh, a parked pair, a message) writes into a newer one or revives a deleted one, and what is
dropped is revoked at Apicbase.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.hostile.conftest import body_json, seed_connection, stored_pair
from tests.hostile.faults import READ_TIMEOUT, UNREACHABLE, Attempt, Fault
from tests.hostile.rig import CID, Rig, build

SAVE = "UpdateItem CONN# save"


@pytest.fixture
def rig(handlers, apicbase, watch, monkeypatch, template) -> Rig:
    return build(handlers, apicbase, watch, monkeypatch, template)


def _at(operation: str) -> Any:
    return lambda attempt: attempt.operation == operation


def _live_of_this_test(rig: Rig, issued_before: int) -> set[str]:
    """The refresh tokens issued since ``issued_before`` (and the seeded ones) still live at Apicbase."""
    return set(rig.apicbase.issued_refresh_tokens[issued_before:]) & rig.apicbase.live_refresh_tokens


def _park_in_the_queue_only(rig: Rig) -> tuple[Fault, ...]:
    """The refreshed pair's write and the table's rescue item fail for good: only the SQS copy
    holds it (and it is in flight)."""
    return (
        Fault.rule(READ_TIMEOUT, "the CONN# write times out", _at(SAVE)),
        Fault.rule(UNREACHABLE, "the RESCUE# item cannot be written", _at("PutItem RESCUE#")),
    )


# --- DELETE and reconnect during a refresh ----------------------------------------------------------
@pytest.mark.parametrize("moment", ["token", SAVE], ids=["before Apicbase answers", "before the write"])
def test_a_delete_during_a_refresh_leaves_no_live_token_at_apicbase(rig, moment):
    """Given a connection being refreshed,
    when it is deleted (in another container) while its refresh is at Apicbase, or between
    Apicbase's answer and the write,
    then the delete stands, and no refresh token of the connection is live at Apicbase: the old one
    revoked by the delete, the rotated one revoked by the refresh that could not store it."""
    issued = len(rig.apicbase.issued_refresh_tokens)
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    other = rig.elsewhere("admin")
    deleted: list[Any] = []
    race = Fault.meanwhile("DELETE meanwhile", _at(moment), lambda: deleted.append(rig.delete(container=other)))
    response = rig.refresh((race,))
    assert deleted and deleted[0]["revocation"] == "revoked", deleted
    assert response["statusCode"] in {200, 404, 409}, response["body"]
    rig.recover()
    assert rig.stored() is None
    assert _live_of_this_test(rig, issued) == set()
    assert rig.apicbase.reuses == 0


def test_a_refresh_superseded_by_a_reconnect_revokes_its_pair(rig):
    """Given a connection being refreshed,
    when it is connected again (a new grant) between Apicbase's answer and the refresh's write,
    then the new grant is stored and is the only live one: the refreshed pair, which can never be
    stored, is revoked at Apicbase, and the one it replaced was consumed by the rotation."""
    issued = len(rig.apicbase.issued_refresh_tokens)
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    race = Fault.meanwhile("reconnect meanwhile", _at(SAVE), rig.connect)
    rig.refresh((race,))
    rig.recover()
    assert rig.stored_live()
    assert _live_of_this_test(rig, issued) == {stored_pair(rig.deps, CID).refresh_token}
    assert rig.apicbase.reuses == 0


# --- a parked pair arriving late ----------------------------------------------------------------------
def test_reconnect_after_delete_with_a_stale_rescue_in_flight_keeps_the_new_owners_grant(rig):
    """Given a connection of one Apicbase user whose refreshed pair is parked in an SQS message only,
    when the connection is deleted, then connected again by another user, and the stale message
    arrives afterwards,
    then the new owner's grant stays (tokens and username), and the stale pair is revoked."""
    issued = len(rig.apicbase.issued_refresh_tokens)
    assert rig.connect()["statusCode"] == 200
    rig.refresh(_park_in_the_queue_only(rig))
    parked = rig.apicbase.issued_refresh_tokens[-1]
    assert rig.delete()["revocation"] == "revoked"
    rig.apicbase.username = "new-owner@example.com"
    assert rig.connect()["statusCode"] == 200
    mine = stored_pair(rig.deps, CID)
    rig.deliver()  # the stale message
    rig.recover()
    assert stored_pair(rig.deps, CID) == mine and rig.stored().username == "new-owner@example.com"
    assert parked not in rig.apicbase.live_refresh_tokens
    assert _live_of_this_test(rig, issued) == {mine.refresh_token}


def test_a_parked_pair_cannot_revive_a_deleted_connection(rig):
    """Given a connection whose refreshed pair is parked in an SQS message only,
    when the connection is deleted and the message arrives afterwards,
    then the connection stays deleted and the parked pair is revoked at Apicbase."""
    issued = len(rig.apicbase.issued_refresh_tokens)
    seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    rig.refresh(_park_in_the_queue_only(rig))
    rig.delete()
    rig.deliver()
    rig.recover()
    assert rig.stored() is None
    assert _live_of_this_test(rig, issued) == set()


# --- never a dead token handed out ------------------------------------------------------------------
def _parked(rig: Rig) -> Any:
    """A due connection whose refreshed pair is parked (its write failed for good): Apicbase has
    already deleted the access token still stored."""
    old = seed_connection(rig.deps, rig.apicbase, CID, expires_in=3600)
    response = rig.refresh((Fault.rule(READ_TIMEOUT, "the CONN# write times out", _at(SAVE)),))
    assert response["statusCode"] == 503, response["body"]
    assert old.access_token not in rig.apicbase.access_tokens
    return old


def _live_or_busy(rig: Rig, response: dict[str, Any], token: str | None) -> None:
    if response["statusCode"] == 503:
        assert int(response["headers"]["Retry-After"]) > 0
        return
    assert response["statusCode"] == 200, response["body"]
    assert token in rig.apicbase.access_tokens, "a dead access token was handed out"


def test_get_token_never_hands_out_the_access_token_a_parked_pair_replaced(rig):
    """Given a connection whose refreshed pair is parked,
    when its token is asked for (GET token, POST token with the old one rejected),
    then the answer is the parked pair's live access token, or 503 with Retry-After; never the
    access token Apicbase deleted with the rotation."""
    old = _parked(rig)
    answer = rig.admin("GET", "/token")
    _live_or_busy(rig, answer, (body_json(answer) or {}).get("access_token"))
    answer = rig.admin("POST", "/token", {"rejected_token": old.access_token})
    _live_or_busy(rig, answer, (body_json(answer) or {}).get("access_token"))


def test_the_proxy_never_sends_the_access_token_a_parked_pair_replaced(rig, data_api):
    """Given a connection whose refreshed pair is parked,
    when Apicbase's API is called through the proxy,
    then Apicbase sees the parked pair's live access token (or the caller gets 503 with
    Retry-After), never the deleted one, and no refresh token is presented twice."""
    old = _parked(rig)
    answer = rig.proxy("api/v2/products/")
    sent = [request.headers["Authorization"].removeprefix("Bearer ") for request in data_api.seen]
    assert old.access_token not in sent
    if answer["statusCode"] == 503:
        assert int(answer["headers"]["Retry-After"]) > 0
    else:
        assert answer["statusCode"] == 200, answer["body"]
        assert sent[-1] in rig.apicbase.access_tokens
    assert rig.apicbase.reuses == 0


def test_attempts_are_named_by_item_kind():
    """The races place themselves by the names the injector gives attempts."""
    assert Attempt(0, "dynamodb", SAVE).dynamodb_write
