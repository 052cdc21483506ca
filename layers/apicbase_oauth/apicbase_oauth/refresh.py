"""Refreshing a connection without ever losing a rotated refresh token.

Apicbase (django-oauth-toolkit) very likely rotates refresh tokens: each refresh revokes the
token presented. The rules, in order:

1. Single flight: a conditional write takes the connection's lease before Apicbase is called.
   The lease (``LEASE_SECONDS``) outlives any function's timeout, so it cannot lapse while its
   holder still runs. The same write returns the item: that is the re-read.
2. A token that is already fresh (someone refreshed meanwhile) is left alone.
3. Apicbase answers: the new pair is encrypted and persisted before anything else, conditional
   on the version read under the lease, with backoff on throttling. It is never logged.
4. invalid_grant: the store is the only witness. A newer version means someone else stored a
   rotated pair (success); otherwise the grant is gone: needs_reauthorization, an event, a metric.
5. Transient failures and 429 keep the status, count failures and back off; no blind retries,
   because a request that reached Apicbase may have rotated the token already. The scheduled
   path leaves a connection alone until its next attempt, so an SQS redelivery cannot cut a
   Retry-After short.
6. invalid_client is the secret's fault, not the connection's: re-read the secret once, then
   fail loudly.

The one window that cannot be closed: Apicbase rotated the token and the process died before
the write in step 3 landed. The write is the very next thing after the response (one KMS
encrypt, one UpdateItem); a failure there is logged as an error with the connection id, and the
connection is recovered by connecting it again.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from .adapters.apicbase import TokenResponse
from .adapters.events import REAUTHORIZATION_REQUIRED, REFRESH_FAILING
from .adapters.queue import decode
from .custody import check_client, present, report_oddities, seal_and_save
from .deps import Deps
from .errors import (
    ApicbaseError,
    ApicbaseRejected,
    BrokerError,
    ConditionFailed,
    ConfigurationError,
    ConnectionNotFound,
    DependencyUnavailable,
    InvalidClient,
    InvalidGrant,
    LeaseHeld,
    NeedsReauthorization,
    RateLimited,
    RefreshInProgress,
    TokenUnreadable,
)
from .model import NEEDS_REAUTHORIZATION, Connection, TokenPair
from .observability import logger, metrics

BACKOFF_BASE_SECONDS = 60
BACKOFF_MAX_SECONDS = 6 * 3600

REFRESHED = "refreshed"
ALREADY_FRESH = "already_fresh"
ROTATED_ELSEWHERE = "rotated_elsewhere"
SUPERSEDED = "superseded"
BACKING_OFF = "backing_off"

# Failures a redelivery of the same message cannot cure (the secret, the configuration, the stored
# ciphertext, a request Apicbase refuses). They are recorded on the connection with a backoff and
# the scheduler queues it again when that has passed; an SQS retry would only repeat the answer.
PERMANENT_FAILURES = (InvalidClient, ApicbaseRejected, ConfigurationError, TokenUnreadable)


@dataclass(frozen=True)
class RefreshResult:
    outcome: str
    connection: Connection
    tokens: TokenPair | None = None  # the plaintext pair when this call stored it


def backoff_seconds(failures: int, *, retry_after: float = 0.0, rand: float | None = None) -> int:
    """Exponential backoff with jitter (half to full), never sooner than Retry-After."""
    ceiling = min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)
    jitter = random.uniform(0.5, 1.0) if rand is None else rand  # noqa: S311 (jitter, not a secret)
    return int(max(ceiling * jitter, retry_after, 1))


def refresh_connection(
    deps: Deps, connection_id: str, *, min_validity: int, force: bool = False, respect_backoff: bool = False
) -> RefreshResult:
    """Refresh if the access token expires within ``min_validity`` seconds (or always, ``force``).

    ``respect_backoff`` (the scheduled path): a connection whose next attempt is still in the
    future is left alone (BACKING_OFF), so a redelivered message cannot cut a Retry-After short.

    Raises RefreshInProgress when another refresher holds the lease, NeedsReauthorization,
    ConnectionNotFound, or the failure that was recorded.
    """
    owner = uuid.uuid4().hex
    try:
        connection = deps.leases.acquire_lease(
            connection_id, owner, deps.settings.lease_seconds, respect_backoff=respect_backoff
        )
    except LeaseHeld as held:
        found = held.connection
        if found.status == NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(f"connection {connection_id} needs to be connected again") from None
        now = int(deps.now())
        if respect_backoff and (found.lease_until or 0) < now < (found.next_attempt_at or 0):
            return RefreshResult(BACKING_OFF, found)
        raise RefreshInProgress(f"connection {connection_id} is being refreshed by another caller") from None

    if not force and connection.expires_at - int(deps.now()) > min_validity:
        deps.leases.release_lease(connection, owner)
        return RefreshResult(ALREADY_FRESH, connection)
    if connection.interrupted_lease_until:
        logger.warning("previous refresh was interrupted", connection_id=connection_id)

    try:
        current = deps.cipher.decrypt(connection_id, connection.tokens)
        response = _refresh_at_apicbase(deps, connection, current.refresh_token)
    except InvalidGrant:
        return _on_invalid_grant(deps, connection, owner)
    except (ApicbaseError, DependencyUnavailable, ConfigurationError, TokenUnreadable) as exc:
        _on_failure(deps, connection, owner, exc)
        raise
    return _persist(deps, connection, response, current)


@dataclass(frozen=True)
class QueueReport:
    due: int
    queued: int
    failed: int


def queue_due_refreshes(deps: Deps) -> QueueReport:
    """The schedule's tick: queue every connection whose token expires within the window."""
    if deps.queue is None:
        raise ConfigurationError("REFRESH_QUEUE_URL is not set")
    now = int(deps.now())
    due = list(deps.store.due_connections(due_before=now + deps.settings.refresh_window_seconds, now=now))
    sent, failed = deps.queue.send(due, queued_at=now)
    metrics.add_metric(name="RefreshesQueued", unit="Count", value=sent)
    logger.info("due connections queued", due=len(due), queued=sent, failed=failed)
    return QueueReport(due=len(due), queued=sent, failed=failed)


def refresh_from_message(deps: Deps, body: str) -> str:
    """One SQS record. Returns the outcome; raises (the record fails, SQS retries) on failures
    worth retrying. Duplicates and out-of-order messages are harmless: the lease and the
    freshness check make a second delivery a no-op, and a connection backing off is left alone."""
    message = decode(body)
    try:
        result = refresh_connection(
            deps, message.connection_id, min_validity=deps.settings.refresh_window_seconds, respect_backoff=True
        )
    except RefreshInProgress:
        return "in_progress_elsewhere"
    except NeedsReauthorization:
        return "needs_reauthorization"
    except PERMANENT_FAILURES:
        # Recorded with a backoff (and alarmed); the scheduler queues it again, not SQS.
        return "failed_permanently"
    except ConnectionNotFound:
        return "connection_gone"
    return result.outcome


def _refresh_at_apicbase(deps: Deps, connection: Connection, refresh_token: str) -> TokenResponse:
    credentials = deps.credentials.get(connection.application)
    # A refresh must use the application that issued the token.
    check_client(credentials, connection.client_id, connection.connection_id)
    _, response = present(
        deps, credentials, deps.apicbase.refresh, connection_id=connection.connection_id, refresh_token=refresh_token
    )
    return response


def _persist(deps: Deps, connection: Connection, response: TokenResponse, current: TokenPair) -> RefreshResult:
    # The new refresh token exists only in memory until this write lands.
    pair = TokenPair(response.access_token, response.refresh_token or current.refresh_token)
    try:
        stored = seal_and_save(
            deps,
            connection.connection_id,
            pair,
            deps.leases.save_refreshed,
            connection=connection,
            expires_at=response.expires_at,
            scope=response.scope,
        )
    except ConditionFailed:
        # Reconnected or deleted while we refreshed: the newer grant wins, ours is discarded.
        metrics.add_metric(name="RefreshSuperseded", unit="Count", value=1)
        logger.warning("refreshed pair superseded by a newer grant", connection_id=connection.connection_id)
        return RefreshResult(SUPERSEDED, deps.store.get(connection.connection_id))
    except Exception:
        metrics.add_metric(name="RotatedTokenNotStored", unit="Count", value=1)
        logger.error(
            "refreshed tokens could not be stored; if Apicbase rotated the refresh token, "
            "the connection must be connected again",
            connection_id=connection.connection_id,
        )
        raise
    report_oddities(response, connection.connection_id)
    metrics.add_metric(name="Refreshed", unit="Count", value=1)
    logger.info(
        "refreshed",
        connection_id=connection.connection_id,
        version=stored.version,
        expires_at=stored.expires_at,
        rotated=pair.refresh_token != current.refresh_token,
    )
    return RefreshResult(REFRESHED, stored, pair)


def _on_invalid_grant(deps: Deps, connection: Connection, owner: str) -> RefreshResult:
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


def _on_failure(deps: Deps, connection: Connection, owner: str, exc: BrokerError) -> None:
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
    )
    try:
        deps.leases.record_failure(connection, owner, error=exc.code, next_attempt_at=next_attempt_at)
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
