"""Presenting a grant to Apicbase and keeping what comes back: what connect and refresh share.

- ``require_time``: nothing is presented without the time (the function's, and the lease's) to
  store its answer: ``time_needed``, every figure of it derived from the clients' settings.
- ``present``: call Apicbase with an application's client credentials; after ``invalid_client``
  re-read the secret once and, if it was rotated, try once more. Apicbase authenticates the
  client before it looks at the code or refresh token, so that retry cannot burn either.
- ``save_or_park``: the write of a pair sealed under a data key taken BEFORE Apicbase was called
  must land, retried until the deadline; if it fails for good, the sealed pair is parked in the
  rescue place (an SQS message first, then a table item), from where ``apply_parked`` writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.config import Config

from .adapters.apicbase import ClientCredentials, TokenResponse
from .deps import MUST_LAND_CONFIG, Deps
from .errors import (
    BrokerError,
    ConditionFailed,
    ConfigurationError,
    ConnectionNotFound,
    DependencyUnavailable,
    InvalidClient,
    OutOfTime,
    TokensParked,
)
from .model import Connection, Rescue
from .observability import logger, metrics

T = TypeVar("T")
# Tries of a pair's write kept time for before it is parked (the first, and one retry).
MUST_LAND_ATTEMPTS = 2
# The park: the SQS copy, then the rescue item, one try each kept time for.
PARK_WRITES = 2
# The function's own work between the calls (sealing, logging), and returning its answer.
SLACK_SECONDS = 0.5
# Custody's own backoff between tries of a write that must land.
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0
# Without a deadline (tests, scripts) a write is tried this many times.
UNBOUNDED_ATTEMPTS = 8


# --- time ----------------------------------------------------------------------------------------
def aws_call_seconds(config: Config) -> float:
    """The longest one AWS call can take with ``config``: every attempt botocore may make, each up
    to its connect and read timeouts, and the backoff between them at its longest (standard mode:
    throttling's 1 s base, doubled, at most 20 s)."""
    attempts = int(config.retries["total_max_attempts"])  # type: ignore[attr-defined]
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    timeouts: float = config.connect_timeout + config.read_timeout  # type: ignore[attr-defined]
    return attempts * timeouts + backoff


def _backoff(attempt: int) -> float:
    return min(BACKOFF_BASE_SECONDS * 2**attempt, BACKOFF_MAX_SECONDS)


def park_seconds() -> float:
    """What the park may take: the SQS copy, then the rescue item, one try each."""
    return PARK_WRITES * aws_call_seconds(MUST_LAND_CONFIG)


def reserve_seconds() -> float:
    """What is kept, once Apicbase has answered, for its answer to land: MUST_LAND_ATTEMPTS tries
    of the pair's write (with the backoff between them), then the park, then the slack."""
    write = MUST_LAND_ATTEMPTS * aws_call_seconds(MUST_LAND_CONFIG)
    write += sum(_backoff(attempt) for attempt in range(MUST_LAND_ATTEMPTS - 1))
    return write + park_seconds() + SLACK_SECONDS


def time_needed(deps: Deps, read_timeout: float) -> float:
    """The worst case of one presentation (every connect retry, the read) and of storing its answer."""
    return deps.apicbase.worst_case_seconds(read_timeout) + reserve_seconds()


def require_time(deps: Deps, needed: float, *, lease_until: int | None = None) -> None:
    """Raise OutOfTime unless the function's remaining time (and the lease) cover ``needed``."""
    left = deps.time_left()
    if lease_until is not None:
        left = min(left, lease_until - deps.now())
    if left < needed:
        metrics.add_metric(name="OutOfTime", unit="Count", value=1)
        raise OutOfTime(f"{left:.0f} s left, {needed:.0f} s needed to present a grant and store its answer")


def with_backoff(
    operation: Callable[[], T],
    *,
    sleep: Callable[[float], None],
    time_left: Callable[[], float] = lambda: math.inf,
    keep: float = 0.0,
) -> T:
    """Retry a write that must land (a rotated refresh token exists only in memory; one short try
    each, MUST_LAND_CONFIG) after growing pauses, while one more try still ends ``keep`` seconds
    before the deadline; ``UNBOUNDED_ATTEMPTS`` tries without one."""
    attempt_seconds = aws_call_seconds(MUST_LAND_CONFIG)
    attempt = 0
    while True:
        try:
            return operation()
        except DependencyUnavailable as exc:
            delay = _backoff(attempt)
            attempt += 1
            left = time_left()
            out_of_tries = attempt >= UNBOUNDED_ATTEMPTS if math.isinf(left) else left - delay - attempt_seconds < keep
            if not exc.retryable or out_of_tries:
                raise
            sleep(delay)


def present(
    deps: Deps,
    credentials: ClientCredentials,
    call: Callable[..., T],
    *,
    connection_id: str,
    needed: float,
    **grant: Any,
) -> tuple[ClientCredentials, T]:
    """``call(credentials, **grant)`` (an Apicbase client method), once more with a rotated secret
    after invalid_client, if ``needed`` seconds are still left for it. Returns the credentials that
    worked with the answer; a rejection that stands is counted (the ``InvalidClient`` alarm) and
    raised."""
    try:
        return credentials, call(credentials, **grant)
    except InvalidClient:
        fresh = deps.credentials.get(credentials.application, force_fetch=True)
        if fresh != credentials:
            check_client(fresh, credentials.client_id, connection_id)
            require_time(deps, needed)
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
    deadline, keeping the park's time; if it never lands, park ``rescue`` and raise TokensParked."""
    try:
        return with_backoff(save, sleep=deps.sleep, time_left=deps.time_left, keep=park_seconds() + SLACK_SECONDS)
    except DependencyUnavailable:
        park(deps, rescue)
        raise TokensParked(f"the tokens of connection {rescue.connection_id} were parked for rescue") from None


def park(deps: Deps, rescue: Rescue) -> None:
    """Put the sealed pair in a second durable place: an SQS message first (it also gets the pair
    applied within seconds), then the table's rescue item (the scheduler's sweep finds it). Each
    is retried while the other still has its try. Raises if neither took it."""
    places = []
    one_try = aws_call_seconds(MUST_LAND_CONFIG)
    if deps.queue is not None:
        queue = deps.queue
        try:
            with_backoff(
                lambda: queue.send_rescue(rescue, queued_at=int(deps.now())),
                sleep=deps.sleep,
                time_left=deps.time_left,
                keep=one_try + SLACK_SECONDS,
            )
            places.append("queue")
        except DependencyUnavailable:
            logger.error("rescue message not sent", connection_id=rescue.connection_id)
    try:
        with_backoff(
            lambda: deps.connections.park(rescue), sleep=deps.sleep, time_left=deps.time_left, keep=SLACK_SECONDS
        )
        places.append("table")
    except DependencyUnavailable:
        logger.error("rescue item not written", connection_id=rescue.connection_id)
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
    """Write a parked pair to its connection, unless it holds it already (another copy was applied
    first) or moved on since (deleted, or a newer grant or pair stored): then the rescue is stale,
    and its pair is revoked (``drop``). Returns the connection it revived, or None."""
    connection_id = rescue.connection_id
    applied: Connection | None = None
    try:
        applied = with_backoff(
            lambda: deps.connections.apply_parked(rescue), sleep=deps.sleep, time_left=deps.time_left
        )
    except ConditionFailed:
        if landed(deps, connection_id, rescue.tokens) is not None:
            logger.info("parked tokens were applied already", connection_id=connection_id, kind=rescue.kind)
        else:
            logger.warning("parked tokens are stale; a newer write won", connection_id=connection_id, kind=rescue.kind)
            drop(deps, connection_id, rescue.application, rescue.tokens, reason="stale_parked_pair")
    else:
        metrics.add_metric(name="RescueApplied", unit="Count", value=1)
        logger.warning("parked tokens applied", connection_id=connection_id, kind=rescue.kind)
    try:
        deps.connections.drop_parked(rescue)
    except DependencyUnavailable:
        logger.warning("applied rescue item not deleted; the next look drops it as stale", connection_id=connection_id)
    return applied


def landed(deps: Deps, connection_id: str, sealed: bytes) -> Connection | None:
    """After a fenced write of ``sealed`` failed its condition: the connection, if it holds that
    very pair (an earlier try landed and its answer was lost, or another copy of the rescue was
    applied first), else None. Raises DependencyUnavailable when the table cannot tell."""
    try:
        connection = deps.connections.get(connection_id)
    except ConnectionNotFound:
        return None
    return connection if connection.tokens == sealed else None


def drop(deps: Deps, connection_id: str, application: str, tokens: str | bytes, *, reason: str) -> None:
    """A pair that can never be stored (its connection was deleted, or moved on to a newer grant)
    is revoked at Apicbase, best effort, and recorded: ``DroppedPairRevoked`` or
    ``RevocationFailed``. ``tokens``: its refresh token, or the sealed pair."""
    error = revoke_quietly(deps, connection_id, application, tokens)
    if error is None:
        metrics.add_metric(name="DroppedPairRevoked", unit="Count", value=1)
    logger.warning(
        "a pair that cannot be stored was dropped", connection_id=connection_id, reason=reason, revoked=error is None
    )


def revoke_quietly(deps: Deps, connection_id: str, application: str, refresh_token: str | bytes) -> str | None:
    """Revoke a refresh token at Apicbase (RFC 7009), best effort: ``refresh_token`` is the token,
    or a sealed pair (opened here). Returns the error code when it failed (counted and logged:
    it is reported, never raised), else None."""
    try:
        if isinstance(refresh_token, bytes):
            refresh_token = deps.cipher.decrypt(connection_id, refresh_token).refresh_token
        deps.apicbase.revoke(deps.credentials.get(application), token=refresh_token)
    except Exception as exc:
        code = exc.code if isinstance(exc, BrokerError) else "internal_error"
        metrics.add_metric(name="RevocationFailed", unit="Count", value=1)
        logger.warning("refresh token not revoked", connection_id=connection_id, error=code)
        return code
    return None


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
