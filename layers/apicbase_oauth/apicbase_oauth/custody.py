"""Presenting a grant to Apicbase and keeping what comes back: what connect and refresh share.

- ``present``: call Apicbase with an application's client credentials; after ``invalid_client``
  re-read the secret once and, if it was rotated, try once more. Apicbase authenticates the
  client before it looks at the code or refresh token, so that retry cannot burn either.
- ``save_or_park``: the write of a pair sealed under a data key taken BEFORE Apicbase was called
  must land, retried until the deadline; if it fails for good, the sealed pair is parked in the
  rescue place (a table item, and an SQS message), from where ``apply_parked`` writes it later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from .adapters.apicbase import ClientCredentials, TokenResponse
from .deps import Deps
from .errors import ConditionFailed, ConfigurationError, DependencyUnavailable, InvalidClient, TokensParked
from .model import Connection, Rescue
from .observability import logger, metrics

T = TypeVar("T")
# What the must-land write (with its backoff) and, failing that, the rescue may take.
WRITE_RESERVE_SECONDS = 8.0
# Kept back from the write's retries for parking the pair if the write never lands.
RESCUE_RESERVE_SECONDS = 3.0
# Without a deadline (tests, scripts) the write is tried this many times.
UNBOUNDED_ATTEMPTS = 8


def with_backoff(
    operation: Callable[[], T],
    *,
    sleep: Callable[[float], None],
    time_left: Callable[[], float] = lambda: math.inf,
    base_delay: float = 0.05,
) -> T:
    """Retry a write that must land (a rotated refresh token exists only in memory) until the
    deadline, keeping RESCUE_RESERVE_SECONDS for parking it; ``UNBOUNDED_ATTEMPTS`` without one."""
    attempt = 0
    while True:
        try:
            return operation()
        except DependencyUnavailable as exc:
            delay = min(base_delay * 2 ** min(attempt, 6), 2.0)
            attempt += 1
            left = time_left()
            out_of_tries = attempt >= UNBOUNDED_ATTEMPTS if math.isinf(left) else left - delay < RESCUE_RESERVE_SECONDS
            if not exc.retryable or out_of_tries:
                raise
            sleep(delay)


def present(
    deps: Deps, credentials: ClientCredentials, call: Callable[..., T], *, connection_id: str, **grant: Any
) -> tuple[ClientCredentials, T]:
    """``call(credentials, **grant)`` (an Apicbase client method), once more with a rotated secret
    after invalid_client. Returns the credentials that worked with the answer; a rejection that
    stands is counted (the ``InvalidClient`` alarm) and raised."""
    try:
        return credentials, call(credentials, **grant)
    except InvalidClient:
        fresh = deps.credentials.get(credentials.application, force_fetch=True)
        if fresh != credentials:
            check_client(fresh, credentials.client_id, connection_id)
            logger.info("client secret changed; retrying once", connection_id=connection_id)
            try:
                return fresh, call(fresh, **grant)
            except InvalidClient:
                pass
        metrics.add_metric(name="InvalidClient", unit="Count", value=1)
        logger.error(
            "Apicbase rejected the client credentials; fix the secret",
            application=credentials.application,
            client_id=credentials.client_id,
        )
        raise


def check_client(credentials: ClientCredentials, client_id: str, connection_id: str) -> None:
    """A grant must be presented by the application (client id) that it was issued to."""
    if credentials.client_id != client_id:
        raise ConfigurationError(
            f"connection {connection_id} belongs to client {client_id}, but application "
            f"{credentials.application!r} in the secret now has client {credentials.client_id}",
            code="client_mismatch",
        )


def save_or_park(deps: Deps, save: Callable[[], Connection], rescue: Rescue) -> Connection:
    """``save()`` (a repository verb writing the sealed pair ``rescue`` carries) until the
    deadline; if it never lands, park ``rescue`` and raise TokensParked."""
    try:
        return with_backoff(save, sleep=deps.sleep, time_left=deps.time_left)
    except DependencyUnavailable:
        park(deps, rescue)
        raise TokensParked(f"the tokens of connection {rescue.connection_id} were parked for rescue") from None


def park(deps: Deps, rescue: Rescue) -> None:
    """Put the sealed pair in a second durable place: the table's rescue item, and an SQS
    message carrying it too (which also gets it applied within seconds). Raises if neither took it."""
    places = []
    try:
        with_backoff(lambda: deps.connections.park(rescue), sleep=deps.sleep, time_left=deps.time_left)
        places.append("table")
    except DependencyUnavailable:
        logger.error("rescue item not written", connection_id=rescue.connection_id)
    if deps.queue is not None:
        try:
            deps.queue.send_rescue(rescue, queued_at=int(deps.now()))
            places.append("queue")
        except DependencyUnavailable:
            logger.error("rescue message not sent", connection_id=rescue.connection_id)
    if not places:
        if rescue.kind == "refresh":
            metrics.add_metric(name="RotatedTokenNotStored", unit="Count", value=1)
        else:
            metrics.add_metric(name="GrantNotStored", unit="Count", value=1)
        logger.error(
            "issued tokens could not be stored nor parked", connection_id=rescue.connection_id, kind=rescue.kind
        )
        raise DependencyUnavailable(f"the tokens of connection {rescue.connection_id} could not be stored")
    metrics.add_metric(name="TokensParked", unit="Count", value=1)
    logger.error("tokens parked for rescue", connection_id=rescue.connection_id, kind=rescue.kind, places=places)


def apply_parked(deps: Deps, rescue: Rescue) -> Connection | None:
    """Write a parked pair to its connection, unless the connection moved on since (then the
    rescue is stale and dropped). Returns the connection it revived, or None."""
    connection_id = rescue.connection_id
    applied: Connection | None = None
    try:
        applied = with_backoff(
            lambda: deps.connections.apply_parked(rescue), sleep=deps.sleep, time_left=deps.time_left
        )
    except ConditionFailed:
        logger.warning("parked tokens are stale; a newer write won", connection_id=connection_id, kind=rescue.kind)
    else:
        metrics.add_metric(name="RescueApplied", unit="Count", value=1)
        logger.warning("parked tokens applied", connection_id=connection_id, kind=rescue.kind)
    try:
        deps.connections.drop_parked(rescue)
    except DependencyUnavailable:
        logger.warning("applied rescue item not deleted; the next look drops it as stale", connection_id=connection_id)
    return applied


def report_oddities(response: TokenResponse, connection_id: str) -> None:
    """Say loudly what was odd in a token response that was stored anyway (``OddTokenResponse``)."""
    if response.oddities:
        metrics.add_metric(name="OddTokenResponse", unit="Count", value=1)
        logger.error(
            "Apicbase's token response was odd; the tokens were stored with a safe expiry",
            connection_id=connection_id,
            oddities=list(response.oddities),
            expires_in=response.expires_in,
        )
