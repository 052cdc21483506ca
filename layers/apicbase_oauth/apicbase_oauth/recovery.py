"""When a refresh does not simply work: a failure recorded, a grant rejected, an interrupted or
unknown outcome resolved, a parked pair applied.

The old ACCESS token is the witness of an unknown outcome: django-oauth-toolkit deletes it when
it rotates the refresh token. Active, the refresh token was not consumed; inactive while not yet
expired, it was consumed and the answer is lost: the connection is marked needs_reauthorization
(``rotation_answer_lost``) at once, and the old refresh token is never presented again.
"""

from __future__ import annotations

import random

from .adapters.events import REAUTHORIZATION_REQUIRED, REFRESH_FAILING
from .custody import with_backoff
from .deps import Deps
from .errors import (
    BrokerError,
    ConditionFailed,
    DependencyUnavailable,
    NeedsReauthorization,
    RateLimited,
)
from .model import Connection, RefreshResult, Rescue, TokenPair
from .observability import logger, metrics

BACKOFF_BASE_SECONDS = 60
BACKOFF_MAX_SECONDS = 6 * 3600
ROTATED_ELSEWHERE = "rotated_elsewhere"
RESCUED = "rescued"
ROTATION_ANSWER_LOST = "rotation_answer_lost"
ROTATION_OUTCOME_UNKNOWN = "rotation_outcome_unknown"


def backoff_seconds(failures: int, *, retry_after: float = 0.0, rand: float | None = None) -> int:
    """Exponential backoff with jitter (half to full), never sooner than Retry-After."""
    ceiling = min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)
    jitter = random.uniform(0.5, 1.0) if rand is None else rand  # noqa: S311 (jitter, not a secret)
    return int(max(ceiling * jitter, retry_after, 1))


def rate_limited_for(connection: Connection, now: int) -> int:
    """Seconds left of the Retry-After Apicbase gave the connection's last refresh (0: none): until
    then no path presents its refresh token, so nobody spends a request Apicbase would refuse."""
    if connection.last_error != "rate_limited" or not connection.next_attempt_at:
        return 0
    return max(connection.next_attempt_at - now, 0)


# --- parked pairs ------------------------------------------------------------------------------
def apply_rescue(deps: Deps, rescue: Rescue) -> Connection | None:
    """Write a parked pair to its connection, unless the connection moved on since (then the
    rescue is stale and dropped). Returns the connection it revived, or None."""
    connection_id = rescue.connection_id
    applied: Connection | None = None
    try:
        applied = with_backoff(
            lambda: deps.store.save_tokens(
                connection_id=connection_id,
                application=rescue.application,
                client_id=rescue.client_id,
                tokens=rescue.tokens,
                expires_at=rescue.expires_at,
                scope=rescue.scope,
                username=rescue.username,
                source=rescue.source,
                expected_version=rescue.base_version if rescue.kind == "refresh" else None,
                unwritten_since=rescue.parked_at if rescue.kind == "grant" else None,
            ),
            sleep=deps.sleep,
            time_left=deps.time_left,
        )
    except ConditionFailed:
        logger.warning("parked tokens are stale; a newer write won", connection_id=connection_id, kind=rescue.kind)
    else:
        metrics.add_metric(name="RescueApplied", unit="Count", value=1)
        logger.warning("parked tokens applied", connection_id=connection_id, kind=rescue.kind)
    try:
        deps.rescues.delete(rescue)
    except DependencyUnavailable:
        logger.warning("applied rescue item not deleted; the next look drops it as stale", connection_id=connection_id)
    return applied


# --- the witness -----------------------------------------------------------------------------
def consumed(deps: Deps, connection: Connection, old: TokenPair) -> bool:
    """Whether the stored refresh token was consumed by a refresh whose answer never arrived.

    Introspects the OLD access token. An introspection that fails raises: the question stays
    open, and the caller records the failure with the witness kept, so nothing is presented.
    """
    result = deps.apicbase.introspect(deps.credentials.get(connection.application), token=old.access_token)
    if result.active:
        return False
    if connection.expires_at <= int(deps.now()):
        # Expired: no witness is left, and presenting the refresh token "to see" could revoke
        # its family. Rare (an interrupted refresh of an already expired token): ask a person.
        raise OutcomeUnknown(connection.connection_id)
    return True  # inactive before its expiry: deleted by the rotation


class OutcomeUnknown(Exception):
    """The old access token has expired, so it cannot tell whether the refresh token was consumed."""


def answer_lost(deps: Deps, connection: Connection, owner: str, *, known: bool = True) -> RefreshResult:
    """The refresh token was (or may have been) consumed and its answer is lost: say so at once,
    present nothing."""
    logger.error("a rotated refresh token was lost in transit", connection_id=connection.connection_id, known=known)
    return reauthorization_required(
        deps, connection, owner, reason=ROTATION_ANSWER_LOST if known else ROTATION_OUTCOME_UNKNOWN
    )


# --- failures ----------------------------------------------------------------------------------
def reauthorization_required(deps: Deps, connection: Connection, owner: str, *, reason: str) -> RefreshResult:
    """Mark the connection needs_reauthorization (unless someone stored a newer pair meanwhile)."""
    try:
        marked = deps.leases.mark_needs_reauthorization(connection, reason=reason)
    except ConditionFailed:
        return RefreshResult(ROTATED_ELSEWHERE, deps.store.get(connection.connection_id))
    metrics.add_metric(name="ReauthorizationRequired", unit="Count", value=1)
    logger.warning("connection needs reauthorization", connection_id=connection.connection_id, reason=reason)
    deps.events.publish(
        REAUTHORIZATION_REQUIRED,
        {
            "connection_id": marked.connection_id,
            "application": marked.application,
            "client_id": marked.client_id,
            "username": marked.username,
            "reason": reason,
        },
    )
    raise NeedsReauthorization(f"connection {connection.connection_id} needs to be connected again")


def invalid_grant(deps: Deps, connection: Connection, owner: str) -> RefreshResult:
    # The store is the only witness: a lost race and a revoked grant both say invalid_grant.
    latest = deps.store.get(connection.connection_id)
    if latest.version != connection.version:
        deps.leases.release_lease(latest, owner)
        metrics.add_metric(name="RotationRecovered", unit="Count", value=1)
        logger.info("refresh token was rotated by another refresher", connection_id=connection.connection_id)
        return RefreshResult(ROTATED_ELSEWHERE, latest)
    reason = (
        "refresh_token_rejected_after_interrupted_refresh"
        if connection.interrupted_lease_until
        else "refresh_token_rejected"
    )
    return reauthorization_required(deps, connection, owner, reason=reason)


def record_failure(
    deps: Deps, connection: Connection, owner: str, exc: BrokerError, *, unknown_outcome: bool = False
) -> None:
    """Count a failure and back off. ``unknown_outcome``: keep a witness (a lapsed lease), so the
    next attempt asks the old access token before it presents anything."""
    failures = connection.consecutive_failures + 1
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else 0.0
    next_attempt_at = int(deps.now()) + backoff_seconds(failures, retry_after=retry_after)
    metrics.add_metric(name="RefreshFailed", unit="Count", value=1)
    logger.warning(
        "refresh failed",
        connection_id=connection.connection_id,
        error=exc.code,
        consecutive_failures=failures,
        next_attempt_at=next_attempt_at,
        unknown_outcome=unknown_outcome,
    )
    witness = connection.interrupted_lease_until or (int(deps.now()) if unknown_outcome else None)
    try:
        deps.leases.record_failure(
            connection, owner, error=exc.code, next_attempt_at=next_attempt_at, interrupted=witness
        )
    except DependencyUnavailable:
        logger.error(
            "refresh failure not recorded; the lease expires on its own", connection_id=connection.connection_id
        )
    if failures == deps.settings.failure_warning_threshold:
        deps.events.publish(
            REFRESH_FAILING,
            {
                "connection_id": connection.connection_id,
                "application": connection.application,
                "username": connection.username,
                "consecutive_failures": failures,
                "error": exc.code,
            },
        )
