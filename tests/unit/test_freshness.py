"""One freshness decision: should_refresh's answer and reason for every purpose, at its margins."""

from __future__ import annotations

import dataclasses

import pytest

from apicbase_oauth import freshness
from apicbase_oauth.freshness import (
    ADMIN,
    EXPIRING,
    FORCED,
    FRESH,
    NEEDS_REAUTHORIZATION_REASON,
    RATE_LIMITED,
    REJECTED,
    on_demand,
    scheduled,
    should_refresh,
)
from apicbase_oauth.model import ACTIVE, NEEDS_REAUTHORIZATION, Connection

NOW = 1_700_000_000


def connection(expires_in: int, **fields: object) -> Connection:
    base = Connection("lib-1", "default", "client", ACTIVE, b"sealed", 1, NOW + expires_in)
    return dataclasses.replace(base, **fields)


def waiting(expires_in: int, retry_after: int) -> Connection:
    """A connection whose last refresh Apicbase answered 429 with ``retry_after`` seconds left."""
    return connection(expires_in, last_error="rate_limited", next_attempt_at=NOW + retry_after)


@pytest.mark.parametrize("purpose_of", [on_demand, scheduled], ids=["on_demand", "scheduled"])
def test_a_token_expiring_within_the_margin_is_refreshed_and_one_second_later_is_fresh(settings, purpose_of) -> None:
    # Given the purpose's margin
    purpose = purpose_of(settings)
    # Then at the margin it is refreshed, and a second beyond it it is fresh
    assert should_refresh(connection(purpose.margin), NOW, purpose) == (True, EXPIRING)
    assert should_refresh(connection(purpose.margin + 1), NOW, purpose) == (False, FRESH)


def test_the_margins_are_the_settings(settings) -> None:
    assert on_demand(settings).margin == settings.demand_margin_seconds
    assert scheduled(settings).margin == settings.schedule_margin_seconds
    assert scheduled(settings).respect_backoff and not on_demand(settings).respect_backoff


def test_an_expired_token_is_refreshed_on_demand(settings) -> None:
    assert should_refresh(connection(-3600), NOW, on_demand(settings)) == (True, EXPIRING)


@pytest.mark.parametrize("purpose", [ADMIN, REJECTED], ids=["admin", "rejected"])
def test_a_forced_refresh_ignores_the_expiry(purpose) -> None:
    assert should_refresh(connection(7 * 86400), NOW, purpose) == (True, FORCED)


def test_while_apicbase_s_retry_after_runs_nothing_is_refreshed_but_a_rejected_token(settings) -> None:
    # Given a connection due now whose Retry-After has one second left
    due = waiting(expires_in=0, retry_after=1)
    # Then on demand, scheduled and admin wait, and a token Apicbase rejected is replaced anyway
    assert should_refresh(due, NOW, on_demand(settings)) == (False, RATE_LIMITED)
    assert should_refresh(due, NOW, scheduled(settings)) == (False, RATE_LIMITED)
    assert should_refresh(due, NOW, ADMIN) == (False, RATE_LIMITED)
    assert should_refresh(due, NOW, REJECTED) == (True, FORCED)


def test_when_the_retry_after_ends_the_refresh_goes_ahead(settings) -> None:
    # Given a Retry-After that ends exactly now
    due = waiting(expires_in=0, retry_after=0)
    # Then it no longer holds anything back
    assert freshness.retry_after(due, NOW) == 0
    assert should_refresh(due, NOW, on_demand(settings)) == (True, EXPIRING)
    assert should_refresh(due, NOW, ADMIN) == (True, FORCED)


def test_a_fresh_token_is_fresh_even_while_apicbase_asks_to_wait(settings) -> None:
    assert should_refresh(waiting(expires_in=86400, retry_after=60), NOW, on_demand(settings)) == (False, FRESH)


def test_another_failure_than_a_rate_limit_is_no_retry_after() -> None:
    failed = connection(0, last_error="apicbase_unavailable", next_attempt_at=NOW + 600)
    assert freshness.retry_after(failed, NOW) == 0


@pytest.mark.parametrize("purpose", [ADMIN, REJECTED], ids=["admin", "rejected"])
def test_a_connection_that_needs_reauthorization_is_never_refreshed(settings, purpose) -> None:
    gone = connection(0, status=NEEDS_REAUTHORIZATION)
    for asked in (purpose, on_demand(settings), scheduled(settings)):
        assert should_refresh(gone, NOW, asked) == (False, NEEDS_REAUTHORIZATION_REASON)


def test_a_token_serves_while_it_expires_later_than_the_serving_margin() -> None:
    margin = freshness.SERVING_MARGIN_SECONDS
    assert freshness.still_serves(connection(margin + 1), NOW)
    assert not freshness.still_serves(connection(margin), NOW)


def test_asked_to_wait_passes_apicbase_s_retry_after_on() -> None:
    error = freshness.asked_to_wait(waiting(expires_in=0, retry_after=42), NOW)
    assert (error.code, error.retry_after) == ("rate_limited", 42)
