"""Storing a grant: the code presented once, the identity checked when one is expected, the pair
sealed and saved before Apicbase is asked anything else, and revocation that never raises."""

from __future__ import annotations

from typing import Any

import pytest

from apicbase_oauth import grants
from apicbase_oauth.errors import ApicbaseUnavailable, IdentityMismatch, IdentityUnverified
from tests import fakes
from tests.conftest import CALLBACK_URL

CID = "lib-grant"


def exchange(deps, apicbase, **fields: Any):
    return grants.exchange_and_store(
        deps,
        connection_id=CID,
        application="default",
        expected_client_id=fakes.CLIENT_ID,
        code=apicbase.issue_code(),
        redirect_uri=CALLBACK_URL,
        code_verifier=None,
        source="callback",
        **fields,
    )


def test_a_grant_is_stored_sealed_with_the_username_apicbase_names(deps, apicbase) -> None:
    # Given a code Apicbase issued
    # When it is exchanged and stored
    connection = exchange(deps, apicbase)
    # Then the stored pair is the one Apicbase issued, sealed for this connection, with its user
    pair = deps.cipher.decrypt(CID, deps.connections.get(CID).tokens)
    assert pair.refresh_token == apicbase.issued_refresh_tokens[-1]
    assert connection.username == apicbase.username and connection.source == "callback"
    assert apicbase.revocations == 0


def test_the_expected_user_s_grant_is_stored(deps, apicbase) -> None:
    # Given a session that expects the user who signs in
    connection = exchange(deps, apicbase, expected_username=apicbase.username)
    # Then the grant is stored as usual
    assert deps.connections.get(CID).version == connection.version
    assert apicbase.revocations == 0


def test_another_user_s_grant_is_revoked_and_never_stored(deps, apicbase) -> None:
    # Given a session that expects someone else than the user who signed in
    with pytest.raises(IdentityMismatch):
        exchange(deps, apicbase, expected_username="owner@example.com")
    # Then nothing is stored and the grant is revoked at Apicbase
    assert deps.connections.table.scan()["Items"] == []
    assert apicbase.revocations == 1 and apicbase.live_refresh_tokens == set()


def test_an_identity_that_cannot_be_checked_fails_closed(deps, apicbase, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an expected user and an introspection endpoint that fails
    def down(*args: Any, **kwargs: Any) -> None:
        raise ApicbaseUnavailable("Apicbase answered HTTP 503", request_sent=True)

    monkeypatch.setattr(deps.apicbase, "introspect", down)
    # When the code is exchanged, then the grant is refused, revoked, and nothing is stored
    with pytest.raises(IdentityUnverified):
        exchange(deps, apicbase, expected_username=apicbase.username)
    assert deps.connections.table.scan()["Items"] == []
    assert apicbase.revocations == 1 and apicbase.live_refresh_tokens == set()


def test_the_identity_check_waits_a_bounded_time_for_introspection(
    deps, apicbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an expected user, and introspection's timeouts recorded
    timeouts: list[float | None] = []
    introspect = deps.apicbase.introspect

    def recording(credentials: Any, *, token: str, read_timeout: float | None = None) -> Any:
        timeouts.append(read_timeout)
        return introspect(credentials, token=token, read_timeout=read_timeout)

    monkeypatch.setattr(deps.apicbase, "introspect", recording)
    # When the code is exchanged
    exchange(deps, apicbase, expected_username=apicbase.username)
    # Then the introspection that decides is asked with the short identity timeout
    assert timeouts[0] == grants.IDENTITY_READ_TIMEOUT < deps.apicbase.read_timeout


def test_revoke_quietly_revokes_a_token_or_a_sealed_pair(deps, apicbase) -> None:
    # Given a stored grant
    exchange(deps, apicbase)
    sealed = deps.connections.get(CID).tokens
    # When its sealed pair is revoked quietly
    error = grants.revoke_quietly(deps, CID, "default", sealed)
    # Then the pair was opened and its refresh token revoked
    assert error is None
    assert apicbase.revocations == 1 and apicbase.live_refresh_tokens == set()


def test_revoke_quietly_reports_a_failure_and_never_raises(deps, apicbase, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a revocation endpoint that fails, and one that crashes
    def down(*args: Any, **kwargs: Any) -> None:
        raise ApicbaseUnavailable("Apicbase answered HTTP 503", request_sent=True)

    monkeypatch.setattr(deps.apicbase, "revoke", down)
    # Then the error's code is returned, not raised
    assert grants.revoke_quietly(deps, CID, "default", "a-refresh-token") == "apicbase_unavailable"

    monkeypatch.setattr(deps.apicbase, "revoke", lambda *a, **k: 1 / 0)
    assert grants.revoke_quietly(deps, CID, "default", "a-refresh-token") == "internal_error"
