"""Keep alive: refreshing a connection without ever losing a rotated refresh token.

Apicbase (django-oauth-toolkit) very likely rotates refresh tokens: each refresh revokes the
token presented, and may revoke the whole family if a revoked one is presented again. The story,
one step per function, in the order ``refresh_connection`` tells it:

1. Time (``custody.require_time``): nothing is presented without the time (the function's and
   the lease's) to store the answer; a caller without it gets OutOfTime before anything is taken.
2. Lease (``_take_lease``): a conditional write takes the connection's lease (which outlives any
   function) and returns the item: that is the re-read. ``freshness.should_refresh`` decides.
3. An interrupted lease (``_after_interruption``): its holder died, so a parked pair is applied,
   else the old access token (``_ask_the_witness``) tells whether the refresh token was consumed.
4. The key (``deps.cipher.data_key``): the data key to seal the answer is taken before Apicbase
   is called.
5. The presentation (``_present``), once: invalid_grant asks the store (a newer version: someone
   else rotated); an unknown outcome (a read timeout, a reset after sending) asks the witness at
   once; transient failures and 429 back off (``_record_failure``); nothing is retried blindly.
6. Seal and save (``_seal_and_save``): the answer is sealed and written, fenced by the version,
   before anything else; a write that never lands parks the sealed pair (``custody``).
7. Release: the save releases the lease; every other ending gives it back or records a failure.

The old ACCESS token is the witness of an unknown outcome: django-oauth-toolkit deletes it when
it rotates the refresh token. Active, the refresh token was not consumed; inactive while not yet
expired, it was consumed and the answer is lost: the connection is marked needs_reauthorization
(``rotation_answer_lost``) at once, and the old refresh token is never presented again.
"""

from __future__ import annotations

import random
import uuid

from .adapters.apicbase import ClientCredentials, TokenResponse
from .adapters.crypto import DataKey
from .custody import (
    apply_parked,
    check_client,
    drop,
    landed,
    present,
    report_oddities,
    require_time,
    save_or_park,
    time_needed,
)
from .deps import Deps
from .errors import (
    ApicbaseError,
    ApicbaseRejected,
    ApicbaseUnavailable,
    BrokerError,
    ConditionFailed,
    ConfigurationError,
    DependencyUnavailable,
    InvalidClient,
    InvalidGrant,
    LeaseHeld,
    NeedsReauthorization,
    OutOfTime,
    RateLimited,
    RefreshInProgress,
    TokensParked,
    TokenUnreadable,
)
from .freshness import FRESH, RATE_LIMITED, Purpose, asked_to_wait, should_refresh
from .model import NEEDS_REAUTHORIZATION, Connection, RefreshResult, Rescue, TokenPair
from .observability import logger, metrics

REFRESHED = "refreshed"
ALREADY_FRESH = "already_fresh"
SUPERSEDED = "superseded"
BACKING_OFF = "backing_off"
ROTATED_ELSEWHERE = "rotated_elsewhere"
RESCUED = "rescued"
ROTATION_ANSWER_LOST = "rotation_answer_lost"
ROTATION_OUTCOME_UNKNOWN = "rotation_outcome_unknown"

# Failures a redelivery of the same message cannot cure (the secret, the configuration, the stored
# ciphertext, a request Apicbase refuses). They are recorded on the connection with a backoff and
# the scheduler queues it again when that has passed; an SQS retry would only repeat the answer.
PERMANENT_FAILURES = (InvalidClient, ApicbaseRejected, ConfigurationError, TokenUnreadable)

BACKOFF_BASE_SECONDS = 60
BACKOFF_MAX_SECONDS = 6 * 3600


def refresh_connection(deps: Deps, connection_id: str, purpose: Purpose) -> RefreshResult:
    """Refresh the connection if ``freshness.should_refresh`` says so for ``purpose``.

    Raises OutOfTime, RefreshInProgress when another refresher holds the lease, RateLimited
    while Apicbase's Retry-After runs, NeedsReauthorization, ConnectionNotFound, TokensParked,
    or the failure that was recorded.
    """
    needed = time_needed(deps, deps.apicbase.refresh_read_timeout)
    require_time(deps, needed)
    owner = uuid.uuid4().hex
    connection = _take_lease(deps, connection_id, owner, purpose)
    if isinstance(connection, RefreshResult):
        return connection
    refresh, reason = should_refresh(connection, int(deps.now()), purpose)
    # An interrupted lease is resolved even for a fresh token: its refresh may have rotated it.
    interrupted = connection.interrupted_lease_until is not None
    if not refresh and not (interrupted and reason == FRESH):
        return _give_back(deps, connection, owner, reason)
    current = _open(deps, connection, owner)
    if interrupted:
        resolved = _after_interruption(deps, connection, owner, current, fresh=not refresh)
        if resolved is not None:
            return resolved
    try:
        key = deps.cipher.data_key(connection_id)
        credentials = _credentials(deps, connection)
        # Last, right before Apicbase: every call before it may have been slow.
        require_time(deps, needed, lease_until=connection.lease_until)
        response = _present(deps, connection, credentials, current.refresh_token, needed)
    except InvalidGrant:
        return _invalid_grant(deps, connection, owner)
    except OutOfTime:
        deps.connections.release_lease(connection, owner)
        raise
    except ApicbaseUnavailable as exc:
        if exc.request_sent:
            return _after_unknown_outcome(deps, connection, owner, current, exc)
        _record_failure(deps, connection, owner, exc)
        raise
    except (ApicbaseError, DependencyUnavailable, ConfigurationError) as exc:
        _record_failure(deps, connection, owner, exc)
        raise
    return _seal_and_save(deps, connection, key, response, current)


# --- 2. the lease ----------------------------------------------------------------------------
def _take_lease(deps: Deps, connection_id: str, owner: str, purpose: Purpose) -> Connection | RefreshResult:
    """The connection as the lease write returned it, or BACKING_OFF on the scheduled path."""
    try:
        return deps.connections.take_lease(
            connection_id, owner, deps.settings.lease_seconds, respect_backoff=purpose.respect_backoff
        )
    except LeaseHeld as held:
        found = held.connection
        if found.status == NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(connection_id) from None
        now = int(deps.now())
        if purpose.respect_backoff and (found.lease_until or 0) < now < (found.next_attempt_at or 0):
            return RefreshResult(BACKING_OFF, found)
        raise RefreshInProgress(f"connection {connection_id} is being refreshed by another caller") from None


def _give_back(deps: Deps, connection: Connection, owner: str, reason: str) -> RefreshResult:
    """Nothing to present: the token is fresh, or Apicbase asked to wait (its Retry-After is
    passed on, and a lapsed lease's witness is kept for the next refresher)."""
    if reason == RATE_LIMITED:
        deps.connections.release_lease(connection, owner, keep_witness=True)
        raise asked_to_wait(connection, int(deps.now()))
    deps.connections.release_lease(connection, owner)
    return RefreshResult(ALREADY_FRESH, connection)


def _open(deps: Deps, connection: Connection, owner: str) -> TokenPair:
    try:
        return deps.cipher.decrypt(connection.connection_id, connection.tokens)
    except (DependencyUnavailable, TokenUnreadable) as exc:
        _record_failure(deps, connection, owner, exc)
        raise


# --- 3. an interrupted lease -----------------------------------------------------------------
def _after_interruption(
    deps: Deps, connection: Connection, owner: str, current: TokenPair, *, fresh: bool
) -> RefreshResult | None:
    """The lease lapsed while held: its refresh may have rotated the token. A parked pair is
    applied; else the old access token decides whether the refresh token may be presented.
    None: go on and refresh."""
    logger.warning("previous refresh was interrupted", connection_id=connection.connection_id)
    rescue = deps.connections.parked(connection.connection_id)
    if rescue is not None:
        applied = apply_parked(deps, rescue)
        if applied is not None:
            return RefreshResult(RESCUED, applied)
    lost = _ask_the_witness(deps, connection, owner, current)
    if lost is not None:
        return lost
    if fresh:  # the witness cleared the refresh token; nothing else to do
        deps.connections.release_lease(connection, owner)
        return RefreshResult(ALREADY_FRESH, connection)
    return None


def _ask_the_witness(
    deps: Deps, connection: Connection, owner: str, current: TokenPair, *, failure: BrokerError | None = None
) -> RefreshResult | None:
    """Whether the stored refresh token was consumed by a refresh whose answer never arrived: the
    OLD access token's introspection tells. Consumed (or unknowable): the connection needs
    reauthorization, said at once. None: not consumed. An introspection that fails leaves the
    question open: recorded with the witness kept, and ``failure`` (else its own error) raised."""
    try:
        result = deps.apicbase.introspect(deps.credentials.get(connection.application), token=current.access_token)
    except (ApicbaseError, DependencyUnavailable) as unknown:
        _record_failure(deps, connection, owner, unknown, unknown_outcome=True)
        if failure is not None:
            raise failure from None
        raise
    if result.active:
        return None
    if connection.expires_at <= int(deps.now()):
        # Expired: no witness is left, and presenting the refresh token "to see" could revoke
        # its family. Rare (an interrupted refresh of an already expired token): ask a person.
        return _answer_lost(deps, connection, known=False)
    return _answer_lost(deps, connection)  # inactive before its expiry: deleted by the rotation


def _answer_lost(deps: Deps, connection: Connection, *, known: bool = True) -> RefreshResult:
    """The refresh token was (or may have been) consumed and its answer is lost: say so at once,
    present nothing."""
    logger.error("a rotated refresh token was lost in transit", connection_id=connection.connection_id, known=known)
    return _reauthorization_required(
        deps, connection, reason=ROTATION_ANSWER_LOST if known else ROTATION_OUTCOME_UNKNOWN
    )


# --- 5. the presentation ---------------------------------------------------------------------
def _credentials(deps: Deps, connection: Connection) -> ClientCredentials:
    credentials = deps.credentials.get(connection.application)
    # A refresh must use the application that issued the token.
    check_client(credentials, connection.client_id, connection.connection_id)
    return credentials


def _present(
    deps: Deps, connection: Connection, credentials: ClientCredentials, refresh_token: str, needed: float
) -> TokenResponse:
    _, response = present(
        deps,
        credentials,
        deps.apicbase.refresh,
        connection_id=connection.connection_id,
        needed=needed,
        refresh_token=refresh_token,
    )
    return response


def _after_unknown_outcome(
    deps: Deps, connection: Connection, owner: str, current: TokenPair, exc: ApicbaseUnavailable
) -> RefreshResult:
    """The request reached Apicbase but no answer came back: resolve it now, present nothing."""
    lost = _ask_the_witness(deps, connection, owner, current, failure=exc)
    if lost is not None:
        return lost
    _record_failure(deps, connection, owner, exc)
    raise exc


def _invalid_grant(deps: Deps, connection: Connection, owner: str) -> RefreshResult:
    # The store is the only witness: a lost race and a revoked grant both say invalid_grant.
    latest = deps.connections.get(connection.connection_id)
    if latest.version != connection.version:
        deps.connections.release_lease(latest, owner)
        metrics.add_metric(name="RotationRecovered", unit="Count", value=1)
        logger.info("refresh token was rotated by another refresher", connection_id=connection.connection_id)
        return RefreshResult(ROTATED_ELSEWHERE, latest)
    reason = (
        "refresh_token_rejected_after_interrupted_refresh"
        if connection.interrupted_lease_until
        else "refresh_token_rejected"
    )
    return _reauthorization_required(deps, connection, reason=reason)


# --- 6. seal and save ------------------------------------------------------------------------
def _seal_and_save(
    deps: Deps, connection: Connection, key: DataKey, response: TokenResponse, current: TokenPair
) -> RefreshResult:
    # The new refresh token exists only in memory until this write lands.
    pair = TokenPair(response.access_token, response.refresh_token or current.refresh_token)
    sealed = deps.cipher.seal(key, pair)
    rescue = Rescue(
        connection_id=connection.connection_id,
        kind="refresh",
        tokens=sealed,
        base_version=connection.version,
        application=connection.application,
        client_id=connection.client_id,
        expires_at=response.expires_at,
        scope=response.scope or connection.scope,
        username=connection.username,
        source=connection.source or "callback",
        parked_at=int(deps.now()),
        generation=connection.generation,
    )
    stored: Connection | None
    try:
        stored = save_or_park(
            deps,
            lambda: deps.connections.save_refreshed(
                connection, tokens=sealed, expires_at=response.expires_at, scope=response.scope
            ),
            rescue,
        )
    except ConditionFailed:
        stored = _landed_or_dropped(deps, connection, sealed, pair)
    except TokensParked:
        # The lease stays held: nobody presents the old refresh token until the parked pair is applied.
        raise
    if stored is None:
        return RefreshResult(SUPERSEDED, deps.connections.get(connection.connection_id))
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


def _landed_or_dropped(deps: Deps, connection: Connection, sealed: bytes, pair: TokenPair) -> Connection | None:
    """The write's fence failed: an earlier try of it landed (its answer lost), or the connection
    was reconnected or deleted while we refreshed. Then the newer grant wins, and our pair, which
    can never be stored, is revoked at Apicbase (best effort) rather than left live there."""
    try:
        stored = landed(deps, connection.connection_id, sealed)
    except DependencyUnavailable:
        logger.error("refreshed pair's write not confirmed", connection_id=connection.connection_id)
        raise
    if stored is None:
        metrics.add_metric(name="RefreshSuperseded", unit="Count", value=1)
        logger.warning("refreshed pair superseded by a newer grant", connection_id=connection.connection_id)
        drop(deps, connection.connection_id, connection.application, pair.refresh_token, reason="superseded_refresh")
    return stored


# --- endings that are not a refresh ----------------------------------------------------------
def _reauthorization_required(deps: Deps, connection: Connection, *, reason: str) -> RefreshResult:
    """Mark the connection needs_reauthorization (unless someone stored a newer pair meanwhile)."""
    try:
        marked = deps.connections.mark_for_reauthorization(connection, reason=reason)
    except ConditionFailed:
        return RefreshResult(ROTATED_ELSEWHERE, deps.connections.get(connection.connection_id))
    metrics.add_metric(name="ReauthorizationRequired", unit="Count", value=1)
    # Reauthorization Required is announced from the table's stream (announce), once this landed.
    logger.warning("connection needs reauthorization", connection_id=marked.connection_id, reason=reason)
    raise NeedsReauthorization(connection.connection_id)


def backoff_seconds(failures: int, *, retry_after: float = 0.0, rand: float | None = None) -> int:
    """Exponential backoff with jitter (half to full), never sooner than Retry-After."""
    ceiling = min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)
    jitter = random.uniform(0.5, 1.0) if rand is None else rand  # noqa: S311 (jitter, not a secret)
    return int(max(ceiling * jitter, retry_after, 1))


def _record_failure(
    deps: Deps, connection: Connection, owner: str, exc: BrokerError, *, unknown_outcome: bool = False
) -> None:
    """Count a failure and back off. ``unknown_outcome``: keep a witness (a lapsed lease), so the
    next attempt asks the old access token before it presents anything."""
    failures = connection.consecutive_failures + 1
    wait = exc.retry_after if isinstance(exc, RateLimited) else 0.0
    next_attempt_at = int(deps.now()) + backoff_seconds(failures, retry_after=wait)
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
        deps.connections.record_failure(
            connection, owner, error=exc.code, next_attempt_at=next_attempt_at, interrupted=witness
        )
    except DependencyUnavailable:
        logger.error(
            "refresh failure not recorded; the lease expires on its own", connection_id=connection.connection_id
        )
