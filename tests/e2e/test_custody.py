"""Custody against the real sandbox (django-oauth-toolkit with reuse protection on): an odd 2xx
keeps the rotated refresh token; an answer that outlives the broker's read timeout (the sandbox
rotated, then answered late) is said at once as rotation_answer_lost, and nothing is presented
twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.localrun import ARTIFACTS, LocalRun

# The broker stops waiting for a refresh's answer after this (APICBASE_REFRESH_READ_TIMEOUT).
READ_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def custody_run() -> Iterator[LocalRun]:
    """A run whose schedule never ticks, and whose refresh read timeout is short enough to outwait."""
    ARTIFACTS.mkdir(exist_ok=True)
    run = LocalRun(
        ARTIFACTS / "e2e-custody-run.log",
        REFRESH_TICK_SECONDS="86400",
        APICBASE_REFRESH_READ_TIMEOUT=str(READ_TIMEOUT_SECONDS),
    )
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def test_an_odd_2xx_keeps_the_rotated_refresh_token(custody_run: LocalRun) -> None:
    # Given an imported connection, and the sandbox answering refreshes without expires_in
    assert custody_run.import_pair("e2e-odd", custody_run.sandbox_grant()).status_code == 200
    custody_run.sandbox_hook("switches", odd_2xx=True)
    try:
        before = custody_run.sandbox_stats()
        # When it is refreshed
        odd = custody_run.api("POST", "/connections/e2e-odd/refresh")
    finally:
        custody_run.sandbox_hook("switches", odd_2xx=False)
    # Then the pair was stored (with a short expiry), and the next refresh works with it
    assert odd.status_code == 200, odd.text
    assert odd.json()["outcome"] == "refreshed"
    again = custody_run.api("POST", "/connections/e2e-odd/refresh")
    assert again.status_code == 200, again.text
    assert delta(before, custody_run.sandbox_stats()).get("reused_refresh_tokens", 0) == 0
    assert custody_run.sandbox_introspect(custody_run.token("e2e-odd"))["active"] is True


def test_an_answer_lost_to_the_read_timeout_is_said_at_once_and_nothing_is_presented_twice(
    custody_run: LocalRun,
) -> None:
    # Given an imported connection, and the sandbox rotating, then answering after the broker gave up
    assert custody_run.import_pair("e2e-late", custody_run.sandbox_grant()).status_code == 200
    custody_run.sandbox_hook("switches", token_delay=READ_TIMEOUT_SECONDS + 2)
    try:
        before = custody_run.sandbox_stats()
        # When it is refreshed
        late = custody_run.api("POST", "/connections/e2e-late/refresh")
    finally:
        custody_run.sandbox_hook("switches", token_delay=0)
    # Then the broker tells at once that the rotation's answer was lost, and presented the
    # consumed refresh token once only (under reuse protection, twice would revoke the family)
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "needs_reauthorization"
    view = custody_run.api("GET", "/connections/e2e-late").json()
    assert (view["status"], view["reauthorization_reason"]) == ("needs_reauthorization", "rotation_answer_lost")
    moved = delta(before, custody_run.sandbox_stats())
    assert moved.get("refresh_requests") == 1
    assert moved.get("reused_refresh_tokens", 0) == 0
