"""Keep alive: refreshing a connection without ever losing a rotated refresh token.

Apicbase (django-oauth-toolkit) very likely rotates refresh tokens: each refresh revokes the
token presented, and may revoke the whole family if a revoked one is presented again. The rules:

1. Time first: nothing is presented without the time (the function's and the lease's) to store
   the answer; a caller without it gets OutOfTime before anything is taken.
2. Single flight: a conditional write takes the connection's lease (which outlives any
   function) and returns the item: that is the re-read. A fresh token is left alone.
3. An interrupted lease (its holder died) is resolved before anything is presented: a parked
   pair is applied, else the old access token tells whether the refresh token was consumed.
4. The data key to seal the answer is taken before Apicbase is called; the answer is sealed and
   written, conditional on the version, before anything else; a write that never lands parks
   the sealed pair (``custody``).
5. invalid_grant: the store is the only witness (a newer version: someone else rotated).
   An unknown outcome (a read timeout, a reset after sending) is resolved at once by the old
   access token (``recovery``); nothing is retried blindly.
6. Transient failures and 429 back off; invalid_client re-reads the secret once (``custody``).
"""

from __future__ import annotations

import uuid

from .adapters.apicbase import TokenResponse
from .adapters.crypto import DataKey
from .custody import check_client, present, report_oddities, require_time, seal_and_save, time_needed
from .deps import Deps
from .errors import (
    ApicbaseError,
    ApicbaseRejected,
    ApicbaseUnavailable,
    ConditionFailed,
    ConfigurationError,
    DependencyUnavailable,
    InvalidClient,
    InvalidGrant,
    LeaseHeld,
    NeedsReauthorization,
    OutOfTime,
    RefreshInProgress,
    TokensParked,
    TokenUnreadable,
)
from .model import NEEDS_REAUTHORIZATION, Connection, RefreshResult, Rescue, TokenPair
from .observability import logger, metrics
from .recovery import RESCUED, OutcomeUnknown, answer_lost, apply_rescue, consumed, invalid_grant, record_failure

REFRESHED = "refreshed"
ALREADY_FRESH = "already_fresh"
SUPERSEDED = "superseded"
BACKING_OFF = "backing_off"

# Failures a redelivery of the same message cannot cure (the secret, the configuration, the stored
# ciphertext, a request Apicbase refuses). They are recorded on the connection with a backoff and
# the scheduler queues it again when that has passed; an SQS retry would only repeat the answer.
PERMANENT_FAILURES = (InvalidClient, ApicbaseRejected, ConfigurationError, TokenUnreadable)


def refresh_connection(
    deps: Deps, connection_id: str, *, min_validity: int, force: bool = False, respect_backoff: bool = False
) -> RefreshResult:
    """Refresh if the access token expires within ``min_validity`` seconds (or always, ``force``).

    ``respect_backoff`` (the scheduled path): a connection whose next attempt is still in the
    future is left alone (BACKING_OFF), so a redelivered message cannot cut a Retry-After short.

    Raises OutOfTime, RefreshInProgress when another refresher holds the lease,
    NeedsReauthorization, ConnectionNotFound, TokensParked, or the failure that was recorded.
    """
    needed = time_needed(deps, deps.apicbase.refresh_read_timeout)
    require_time(deps, needed)
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

    fresh = not force and connection.expires_at - int(deps.now()) > min_validity
    if fresh and not connection.interrupted_lease_until:
        deps.leases.release_lease(connection, owner)
        return RefreshResult(ALREADY_FRESH, connection)
    try:
        current = deps.cipher.decrypt(connection_id, connection.tokens)
    except (DependencyUnavailable, TokenUnreadable) as exc:
        record_failure(deps, connection, owner, exc)
        raise
    resolved = _after_interruption(deps, connection, owner, current, fresh=fresh)
    if resolved is not None:
        return resolved
    try:
        key = deps.cipher.data_key(connection_id)
        require_time(deps, needed, lease_until=connection.lease_until)
        response = _refresh_at_apicbase(deps, connection, current.refresh_token)
    except InvalidGrant:
        return invalid_grant(deps, connection, owner)
    except OutOfTime:
        deps.leases.release_lease(connection, owner)
        raise
    except ApicbaseUnavailable as exc:
        if exc.request_sent:
            return _after_unknown_outcome(deps, connection, owner, current, exc)
        record_failure(deps, connection, owner, exc)
        raise
    except (ApicbaseError, DependencyUnavailable, ConfigurationError) as exc:
        record_failure(deps, connection, owner, exc)
        raise
    return _persist(deps, connection, key, response, current)


def _after_interruption(
    deps: Deps, connection: Connection, owner: str, current: TokenPair, *, fresh: bool
) -> RefreshResult | None:
    """The lease lapsed while held: its refresh may have rotated the token. A parked pair is
    applied; else the old access token decides whether the refresh token may be presented.
    None: go on and refresh."""
    if not connection.interrupted_lease_until:
        return None
    logger.warning("previous refresh was interrupted", connection_id=connection.connection_id)
    rescue = deps.rescues.get(connection.connection_id)
    if rescue is not None:
        applied = apply_rescue(deps, rescue)
        if applied is not None:
            return RefreshResult(RESCUED, applied)
    try:
        lost = consumed(deps, connection, current)
    except (ApicbaseError, DependencyUnavailable) as unknown:
        record_failure(deps, connection, owner, unknown, unknown_outcome=True)
        raise
    except OutcomeUnknown:
        return answer_lost(deps, connection, owner, known=False)
    if lost:
        return answer_lost(deps, connection, owner)
    if fresh:  # the witness cleared the refresh token; nothing else to do
        deps.leases.release_lease(connection, owner)
        return RefreshResult(ALREADY_FRESH, connection)
    return None


def _after_unknown_outcome(
    deps: Deps, connection: Connection, owner: str, current: TokenPair, exc: ApicbaseUnavailable
) -> RefreshResult:
    """The request reached Apicbase but no answer came back: resolve it now, present nothing."""
    try:
        lost = consumed(deps, connection, current)
    except (ApicbaseError, DependencyUnavailable) as unknown:
        record_failure(deps, connection, owner, unknown, unknown_outcome=True)
        raise exc from None
    except OutcomeUnknown:
        return answer_lost(deps, connection, owner, known=False)
    if lost:
        return answer_lost(deps, connection, owner)
    record_failure(deps, connection, owner, exc)
    raise exc


def _refresh_at_apicbase(deps: Deps, connection: Connection, refresh_token: str) -> TokenResponse:
    credentials = deps.credentials.get(connection.application)
    # A refresh must use the application that issued the token.
    check_client(credentials, connection.client_id, connection.connection_id)
    _, response = present(
        deps, credentials, deps.apicbase.refresh, connection_id=connection.connection_id, refresh_token=refresh_token
    )
    return response


def _persist(
    deps: Deps, connection: Connection, key: DataKey, response: TokenResponse, current: TokenPair
) -> RefreshResult:
    # The new refresh token exists only in memory until this write lands.
    pair = TokenPair(response.access_token, response.refresh_token or current.refresh_token)
    rescue = Rescue(
        connection_id=connection.connection_id,
        kind="refresh",
        tokens=b"",
        base_version=connection.version,
        application=connection.application,
        client_id=connection.client_id,
        expires_at=response.expires_at,
        scope=response.scope or connection.scope,
        username=connection.username,
        source=connection.source or "callback",
        parked_at=int(deps.now()),
    )
    try:
        stored = seal_and_save(
            deps,
            key,
            pair,
            rescue,
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
    except TokensParked:
        # The lease stays held: nobody presents the old refresh token until the parked pair is applied.
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
