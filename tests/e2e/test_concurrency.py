"""Concurrent callers meet as they would on AWS: in separate worker processes, at DynamoDB's
lease, and at a sandbox whose reuse protection turns a refresh token presented twice into a
connection lost (its whole token family revoked)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.e2e.localrun import ARTIFACTS, CLIENT_ID, LocalRun, at_once

pytestmark = pytest.mark.e2e

CALLERS = 20
ADMIN_FUNCTION = "ConnectionsFunction"
# Inside the broker's 300 s token leeway: the first reader must refresh.
DUE_SECONDS = 60
SCHEDULE_WAIT_SECONDS = 45


@pytest.fixture(scope="module")
def quiet_run() -> Iterator[LocalRun]:
    """A run whose schedule never ticks during the tests, so that every refresh the sandbox
    sees comes from the callers under test."""
    ARTIFACTS.mkdir(exist_ok=True)
    # Twenty containers of the admin API, as the stack gives with AdminReservedConcurrency=20
    # (reservations are opt-in; without one the local pool is small).
    run = LocalRun(
        ARTIFACTS / "e2e-concurrency-run.log",
        REFRESH_TICK_SECONDS="86400",
        **{f"LOCAL_POOL_SIZE_{ADMIN_FUNCTION}": str(CALLERS)},
    )
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()


def together(count: int, call: Callable[[], requests.Response]) -> list[Any]:
    """``call`` from ``count`` clients at once: each answer, or the error it met."""
    return at_once([call] * count, requests.RequestException)


def warm_admin_workers(run: LocalRun) -> None:
    """Cold starts first (one per concurrent caller), so that the callers under test meet at
    the lease and not in the queue for a new process."""
    warm = together(CALLERS, lambda: requests.get(f"{run.url}/connections/e2e-nobody", timeout=120))
    assert [a.status_code for a in warm] == [404] * CALLERS
    assert run.worker_processes(ADMIN_FUNCTION) >= CALLERS // 4


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def test_twenty_concurrent_token_reads_of_a_due_connection_refresh_it_once(quiet_run: LocalRun) -> None:
    # Given a connection whose access token expires within the leeway, and warm workers
    pair = quiet_run.sandbox_grant()
    assert quiet_run.import_pair("e2e-due", pair, expires_in=DUE_SECONDS).status_code == 200
    warm_admin_workers(quiet_run)
    before = quiet_run.sandbox_stats()

    # When twenty callers ask for its token at once
    answers = together(CALLERS, lambda: requests.get(f"{quiet_run.url}/connections/e2e-due/token", timeout=60))

    # Then every one gets the same new access token, from exactly one refresh grant at the sandbox
    assert [a.status_code for a in answers] == [200] * CALLERS, [getattr(a, "text", a) for a in answers]
    tokens = {a.json()["access_token"] for a in answers}
    assert len(tokens) == 1
    assert tokens != {pair["access_token"]}
    assert delta(before, quiet_run.sandbox_stats()) == {"token_requests": 1, "refresh_requests": 1}
    # And it is alive at the sandbox
    assert quiet_run.sandbox_introspect(tokens.pop())["active"] is True


def test_twenty_concurrent_forced_refreshes_never_present_a_refresh_token_twice(quiet_run: LocalRun) -> None:
    # Given a connection, and warm workers
    pair = quiet_run.sandbox_grant()
    assert quiet_run.import_pair("e2e-forced", pair).status_code == 200
    warm_admin_workers(quiet_run)
    before = quiet_run.sandbox_stats()

    # When twenty callers force a refresh at once
    answers = together(CALLERS, lambda: requests.post(f"{quiet_run.url}/connections/e2e-forced/refresh", timeout=60))

    # Then each either refreshed or was told another refresh is running, never an error
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 409}, [getattr(a, "text", a) for a in answers]
    assert all(a.json()["error"]["code"] == "refresh_in_progress" for a in answers if a.status_code == 409)
    refreshed = statuses.count(200)
    assert refreshed >= 1
    # And the sandbox saw one grant per refresh, none presenting a refresh token already presented
    assert delta(before, quiet_run.sandbox_stats()) == {"token_requests": refreshed, "refresh_requests": refreshed}
    # And the connection is alive: active, its token live at the sandbox, and refreshable again
    view = quiet_run.api("GET", "/connections/e2e-forced").json()
    assert (view["status"], view["refresh_count"]) == ("active", refreshed)
    assert quiet_run.sandbox_introspect(quiet_run.token("e2e-forced"))["active"] is True
    assert quiet_run.api("POST", "/connections/e2e-forced/refresh").json()["outcome"] == "refreshed"


def test_the_schedule_waits_out_apicbases_rate_limit(local_run: LocalRun) -> None:
    # Given a pair, then a sandbox that allows the client one token request a minute, spent
    pair = local_run.sandbox_grant()
    local_run.sandbox_hook("switches", rate_limit=1)
    try:
        spent = local_run.http.post(f"{local_run.sandbox_url}/oauth/token/", data={"client_id": CLIENT_ID}, timeout=30)
        assert spent.status_code == 400
        before = local_run.sandbox_stats()

        # When the pair is imported due, and the schedule ticks every second
        imported = local_run.import_pair("e2e-rate-limited", pair, expires_in=DUE_SECONDS)
        assert imported.status_code == 200, imported.text
        deadline = time.monotonic() + SCHEDULE_WAIT_SECONDS
        view = imported.json()
        while view["consecutive_failures"] == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            view = local_run.api("GET", "/connections/e2e-rate-limited").json()
        failed_at = time.time()
        time.sleep(3)  # three more ticks

        # Then its refresh met the 429 once, and the schedule tried no more within Retry-After
        # (the import introspected the token: the user's budget, not the client's)
        changed = delta(before, local_run.sandbox_stats())
        assert (changed.get("throttled"), changed.get("token_requests")) == (1, None)
        view = local_run.api("GET", "/connections/e2e-rate-limited").json()
        assert (view["status"], view["consecutive_failures"], view["last_error"]) == ("active", 1, "rate_limited")
        next_attempt = datetime.fromisoformat(view["next_attempt_at"]).timestamp()
        assert next_attempt >= failed_at + 30  # the sandbox's Retry-After: what is left of its minute
    finally:
        local_run.sandbox_hook("switches", rate_limit=0)


def test_token_reads_during_apicbases_rate_limit_do_not_call_it_again(quiet_run: LocalRun) -> None:
    # Given a due connection, and the sandbox answering 429 to anything past one request a minute
    pair = quiet_run.sandbox_grant()
    quiet_run.sandbox_hook("switches", rate_limit=1)
    try:
        quiet_run.http.post(f"{quiet_run.sandbox_url}/oauth/token/", data={"client_id": CLIENT_ID}, timeout=30)
        assert quiet_run.import_pair("e2e-rl-reads", pair, expires_in=DUE_SECONDS).status_code == 200
        before = quiet_run.sandbox_stats()
        # When the token is read three times and a refresh is forced
        reads = [quiet_run.api("GET", "/connections/e2e-rl-reads/token") for _ in range(3)]
        forced = quiet_run.api("POST", "/connections/e2e-rl-reads/refresh")
        # Then the still valid token serves every read, Apicbase was asked once (and said 429),
        # and the forced refresh passes Apicbase's Retry-After on instead of asking again
        assert [r.status_code for r in reads] == [200] * 3
        assert delta(before, quiet_run.sandbox_stats()) == {"throttled": 1}
        assert forced.status_code == 503
        assert int(forced.headers["Retry-After"]) >= 30
    finally:
        quiet_run.sandbox_hook("switches", rate_limit=0)
