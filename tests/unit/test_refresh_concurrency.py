"""Single flight: many refreshers of one connection at once, the on-demand path waiting
for a lease holder, and functions that outlive the refreshes they start."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from local import template as tpl

from apicbase_oauth import custody, tokens
from apicbase_oauth import deps as deps_module
from apicbase_oauth.adapters.queue import encode
from apicbase_oauth.refresh import ALREADY_FRESH, REFRESHED
from apicbase_oauth.schedule import refresh_from_message
from tests.conftest import load_event
from tests.unit.refresh_support import hold_lease, refresh_elsewhere, seed, serialize_moto_dynamodb, stored_pair

CID = "lib-1"
CONTAINERS = 20


@pytest.fixture
def containers(aws, settings, clock, monkeypatch) -> list[deps_module.Deps]:
    """Twenty Lambda containers, each with its own clients, sharing one DynamoDB whose item
    writes are atomic (see serialize_moto_dynamodb). Waiting uses real (short) sleeps."""
    serialize_moto_dynamodb(monkeypatch)
    built = [deps_module.build(settings, session=aws.session, now=clock) for _ in range(CONTAINERS)]
    for container in built:
        container.sleep = time.sleep
    return built


def all_at_once(containers: list[deps_module.Deps], work: Callable[[deps_module.Deps], Any]) -> list[Any]:
    """Run ``work`` in every container on its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(containers))

    def start(container: deps_module.Deps) -> Any:
        barrier.wait()
        return work(container)

    with ThreadPoolExecutor(max_workers=len(containers)) as pool:
        return list(pool.map(start, containers))


def test_twenty_concurrent_token_requests_refresh_once_and_keep_the_last_refresh_token(
    deps, apicbase, containers, monkeypatch
):
    # Given a connection due on demand, and a refresh that takes a moment at Apicbase
    seed(deps, apicbase, CID, expires_in=60)
    apicbase.delay = 0.3
    # (patient callers: this test is about single flight, not about how long GET /token waits)
    monkeypatch.setattr(tokens, "WAIT_FOR_REFRESH_SECONDS", 60.0)
    # When twenty containers ask for a token at the same moment
    answers = all_at_once(containers, lambda container: tokens.get_token(container, CID).access_token)
    # Then Apicbase saw one token request, everyone got its token, and the rotated one is stored
    stored = stored_pair(deps, CID)
    assert apicbase.token_requests == 1
    assert set(answers) == {stored.access_token}
    assert stored.refresh_token == apicbase.issued_refresh_tokens[-1]
    assert stored.refresh_token in apicbase.live_refresh_tokens


def test_twenty_duplicate_deliveries_refresh_once(deps, apicbase, containers):
    # Given a due connection, and the same refresh message delivered to twenty workers
    seed(deps, apicbase, CID, expires_in=3600)
    apicbase.delay = 0.3
    body = encode(CID, int(deps.now()))
    # When they all handle it at the same moment
    outcomes = all_at_once(containers, lambda container: refresh_from_message(container, body))
    # Then one refreshed, the others stood back, and the rotated refresh token is stored
    assert outcomes.count(REFRESHED) == 1
    assert set(outcomes) <= {REFRESHED, "in_progress_elsewhere", ALREADY_FRESH}
    assert apicbase.token_requests == 1
    assert stored_pair(deps, CID).refresh_token == apicbase.issued_refresh_tokens[-1]


def test_get_token_waits_for_the_lease_holder_and_returns_the_token_it_stored(deps, apicbase, clock):
    # Given a token about to expire, and another refresher holding the lease that finishes while we wait
    seeded = seed(deps, apicbase, CID, expires_in=60)
    hold_lease(deps, CID)
    theirs = []

    def the_holder_finishes_meanwhile(seconds: float) -> None:
        clock.advance(seconds)
        if not theirs:
            theirs.append(refresh_elsewhere(deps, CID, seeded.refresh_token))

    deps.sleep = the_holder_finishes_meanwhile
    # When a token is asked for
    token = tokens.get_token(deps, CID)
    # Then it is the one the holder stored, and this caller never called Apicbase itself
    assert token.access_token == theirs[0].access_token
    assert apicbase.token_requests == 1


def test_get_token_answers_503_with_retry_after_when_the_lease_holder_never_finishes(
    aws, deps, apicbase, clock, load_handler, lambda_context
):
    # Given (on the real clock the handler uses) a token about to expire, leased by a refresher that hangs
    clock.value = time.time()
    seed(deps, apicbase, "lib-42", expires_in=60)
    hold_lease(deps, "lib-42")
    handler = load_handler("ConnectionsFunction")
    handler.DEPS.sleep = lambda seconds: None  # the wait is counted, not slept
    # When a token is asked for through the admin API
    response = handler.lambda_handler(load_event("admin_get_token.json"), lambda_context)
    # Then the answer is 503 refresh_in_progress with a Retry-After, and no token
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"].isdigit()
    assert json.loads(response["body"])["error"]["code"] == "refresh_in_progress"
    assert apicbase.token_requests == 0


def test_get_token_returns_the_still_valid_token_when_the_refresh_fails_transiently(deps, apicbase):
    # Given a token that expires within the leeway but is still valid, and Apicbase answering 503
    seeded = seed(deps, apicbase, CID, expires_in=120)
    apicbase.scripted.append((503, "Service Unavailable", {}))
    # When a token is asked for
    token = tokens.get_token(deps, CID)
    # Then the current token is returned and the failure is recorded for the scheduler
    assert token.access_token == seeded.access_token
    assert deps.connections.get(CID).consecutive_failures == 1


def function_timeouts(template: dict[str, Any]) -> dict[str, int]:
    """(That the lease outlives all of them is tests/unit/test_contract.py's.)"""
    default = template["Globals"]["Function"]["Timeout"]
    return {name: fn.properties.get("Timeout", default) for name, fn in tpl.functions(template).items()}


@pytest.mark.parametrize(
    ("function", "waits", "read_timeout"),
    [
        ("ConnectionsFunction", tokens.WAIT_FOR_REFRESH_SECONDS, "refresh_read_timeout"),
        ("RefreshWorkerFunction", 0.0, "refresh_read_timeout"),
        ("CallbackFunction", 0.0, "read_timeout"),
    ],
)
def test_a_function_that_presents_a_grant_outlives_the_slowest_presentation(
    template, deps, function, waits, read_timeout
):
    # Given the slowest presentation the function can start: waiting for another holder's lease,
    # every connect attempt timing out (urllib3's Retry, with its backoff), Apicbase answering at
    # the very end of the read timeout, then the answer's write failing until it is parked
    slowest = waits + custody.time_needed(deps, getattr(deps.apicbase, read_timeout))
    # Then the function still has time for all of it before Lambda stops it (API Gateway may have
    # answered 503 by then; the stored pair is what matters)
    assert function_timeouts(template)[function] >= slowest
