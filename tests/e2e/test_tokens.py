"""Tokens after connecting: refresh with rotation, the schedule, introspection, and the logs."""

from __future__ import annotations

import time

import pytest

from tests.e2e.localrun import CLIENT_SECRET, LocalRun

pytestmark = pytest.mark.e2e

SCHEDULE_WAIT_SECONDS = 45


def test_a_forced_refresh_rotates_the_refresh_token(local_run: LocalRun) -> None:
    # Given a connected library and its current access token
    local_run.connect("e2e-rotate")
    first = local_run.token("e2e-rotate")

    # When a refresh is forced
    refreshed = local_run.api("POST", "/connections/e2e-rotate/refresh")

    # Then it refreshed, the old pair is revoked by the sandbox and a new token is handed out
    assert refreshed.status_code == 200
    assert refreshed.json()["outcome"] == "refreshed"
    assert local_run.sandbox_introspect(first) == {"active": False}
    second = local_run.token("e2e-rotate")
    assert second != first
    # And the stored refresh token is the rotated one: the sandbox accepts no used refresh token
    again = local_run.api("POST", "/connections/e2e-rotate/refresh").json()
    assert (again["outcome"], again["refresh_count"], again["status"]) == ("refreshed", 2, "active")


def test_the_schedule_refreshes_a_connection_that_is_due(local_run: LocalRun) -> None:
    # Given tokens imported with a minute to live, inside the refresh window
    pair = local_run.sandbox_grant()
    imported = local_run.import_pair("e2e-scheduled", pair, expires_in=60)
    assert imported.status_code == 200, imported.text
    assert imported.json()["last_refresh_at"] is None

    # When the scheduler ticks and the worker takes the queued message
    deadline = time.monotonic() + SCHEDULE_WAIT_SECONDS
    view = imported.json()
    while view["last_refresh_at"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        view = local_run.api("GET", "/connections/e2e-scheduled").json()

    # Then the connection was refreshed, with nobody calling the API, for another week
    assert view["last_refresh_at"] is not None
    assert view["refresh_count"] == 1
    assert view["expires_at"] > imported.json()["expires_at"]
    assert local_run.sandbox_introspect(pair["access_token"]) == {"active": False}


def test_the_logs_hold_no_codes_states_tokens_or_client_secret(local_run: LocalRun) -> None:
    # Given a connect, an import, a refresh and a token read, all with values we know
    connected = local_run.connect("e2e-logs")
    access = local_run.token("e2e-logs")
    pair = local_run.sandbox_grant()
    local_run.import_pair("e2e-logs-import", pair)
    local_run.api("POST", "/connections/e2e-logs-import/refresh")
    refreshed = local_run.token("e2e-logs-import")

    # When the run's output so far is read
    log = local_run.log()

    # Then none of those values is in it
    secrets = {
        "code": connected.code,
        "state": connected.state,
        "access token": access,
        "imported access token": pair["access_token"],
        "imported refresh token": pair["refresh_token"],
        "refreshed access token": refreshed,
        "client secret": CLIENT_SECRET,
    }
    assert log.count("GET /oauth/callback 200") >= 1  # the log is the run's, requests included
    assert [name for name, value in secrets.items() if value in log] == []


def test_introspection_says_active_then_inactive_once_apicbase_revoked_the_grant(local_run: LocalRun) -> None:
    # Given a connected library
    local_run.connect("e2e-introspect")

    # When introspection is asked for, before and after the sandbox revokes the demo user's tokens
    before = local_run.api("GET", "/connections/e2e-introspect?introspect=true").json()["introspection"]
    local_run.sandbox_hook("revoke")
    after = local_run.api("GET", "/connections/e2e-introspect?introspect=true").json()["introspection"]

    # Then Apicbase's answer is passed on: active with the user and scope, then inactive
    assert (before["active"], before["username"], before["scope"]) == (True, "demo", "accounts library")
    assert after["active"] is False
