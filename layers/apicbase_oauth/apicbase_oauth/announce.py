"""Announce: the broker's connection events, derived from the connections table's stream.

An event follows from a state change that has landed in the table, never from the code that made
it: the stream holds every change of a ``CONN#`` item (its images before and after) for 24 hours,
and Lambda hands its records to this function in order until the function says they are done. So
an event is put on EventBridge at least once even when the writer died right after its write or
EventBridge was down; each copy carries the same ``event_id`` (the stream record's id and the
event's kind), which is what an integrator deduplicates on.

Lambda gives a batch up after the event source's retries; its on-failure destination (an SQS
queue) then holds where the records are, not the records. ``{"replay": "dead-letter-queue"}``
reads them back from the stream and announces them the same way.
"""

from __future__ import annotations

from typing import Any

from .adapters.events import (
    CONNECTION_CREATED,
    CONNECTION_DISCONNECTED,
    CONNECTION_RECOVERED,
    IDENTITY_CHANGED,
    REAUTHORIZATION_REQUIRED,
    REFRESH_FAILING,
    Event,
)
from .adapters.stream import ConnectionChange, ConnectionImage, DeadLetter, parse_failed_batch, parse_record
from .deps import Deps
from .errors import BrokerError, ConfigurationError, InvalidRequest, StreamRecordsExpired
from .model import ACTIVE, NEEDS_REAUTHORIZATION
from .observability import logger, metrics

REPLAY_REQUEST = {"replay": "dead-letter-queue"}
# A replay stops taking dead letters when less than this is left of the invocation.
REPLAY_MARGIN_SECONDS = 15
# Longer than the function's Timeout: no other replay takes a letter while this one works on it.
REPLAY_VISIBILITY_SECONDS = 300
GRANT_SOURCES = frozenset({"callback", "pasted_code", "import"})


def handle(deps: Deps, event: Any) -> dict[str, Any]:
    """A batch of stream records from the event source, or an operator's replay request."""
    if event == REPLAY_REQUEST:
        return replay_dead_letters(deps)
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        return announce_records(deps, event["Records"])
    raise InvalidRequest("not a batch of stream records nor a replay request", code="invalid_event")


# --- what a change means -----------------------------------------------------------------------
def _is_grant(old: ConnectionImage | None, new: ConnectionImage) -> bool:
    """A grant stored (connect, pasted code, import, a parked grant applied) rather than a refresh:
    a new version that did not count a refresh (a parked refresh's pair counts one)."""
    return old is None or (new.version > old.version and new.refresh_count == old.refresh_count)


def derive(change: ConnectionChange, *, failure_threshold: int) -> list[Event]:
    """The events one change of a connection item means, from its images alone. Every detail is
    built here, field by field, from allow-listed attributes: never a token."""
    old, new = change.old, change.new
    events: list[Event] = []

    def announce(kind: str, detail_type: str, connection: ConnectionImage, **detail: Any) -> None:
        detail = {
            "event_id": f"{change.event_id}.{kind}",
            "connection_id": connection.connection_id,
            "application": connection.application,
            **detail,
        }
        events.append(Event(detail_type=detail_type, detail=detail, time=change.at))

    if new is None:
        if old is not None:
            announce("disconnected", CONNECTION_DISCONNECTED, old, username=old.username)
        return events

    grant = _is_grant(old, new)
    if grant:
        if new.source not in GRANT_SOURCES:
            raise InvalidRequest("stream record: a grant without its source", code="invalid_stream_record")
        announce(
            "created",
            CONNECTION_CREATED,
            new,
            client_id=new.client_id,
            username=new.username,
            scope=new.scope,
            source=new.source,
            reconnected=old is not None,
        )
    # A reconnect as another user, seen when the grant lands or when its introspection does.
    identity_seen = grant or (old is not None and old.username != new.username)
    if identity_seen and new.previous_username and new.username and new.previous_username != new.username:
        announce(
            "identity-changed",
            IDENTITY_CHANGED,
            new,
            previous_username=new.previous_username,
            username=new.username,
            source=new.source,
        )
    if old is None:
        return events

    if old.status != NEEDS_REAUTHORIZATION and new.status == NEEDS_REAUTHORIZATION:
        announce(
            "reauthorization-required",
            REAUTHORIZATION_REQUIRED,
            new,
            client_id=new.client_id,
            username=new.username,
            reason=new.reauthorization_reason or "refresh_token_rejected",
        )
    if old.consecutive_failures < failure_threshold <= new.consecutive_failures:
        announce(
            "refresh-failing",
            REFRESH_FAILING,
            new,
            username=new.username,
            consecutive_failures=new.consecutive_failures,
            error=new.last_error or "unknown",
        )
    stored = new.version > old.version and new.status == ACTIVE and new.consecutive_failures == 0
    was = (
        "needs_reauthorization"
        if old.status == NEEDS_REAUTHORIZATION
        else "refresh_failing"
        if old.consecutive_failures >= failure_threshold
        else None
    )
    if stored and was:
        announce(
            "recovered",
            CONNECTION_RECOVERED,
            new,
            client_id=new.client_id,
            username=new.username,
            recovered_from=was,
            via=new.source if grant else "refresh",
        )
    return events


# --- announcing --------------------------------------------------------------------------------
def announce_records(deps: Deps, records: list[Any]) -> dict[str, Any]:
    """Derive and put the events of ``records`` in order. The first record whose events were not
    all put is a batch item failure: Lambda delivers it, and every record after it, again."""
    events: list[Event] = []
    origins: list[str] = []  # the sequence number of the record each event comes from
    for raw in records:
        try:
            change = parse_record(raw)
            derived = derive(change, failure_threshold=deps.settings.failure_warning_threshold) if change else []
        except InvalidRequest as exc:
            # Not of our shape: delivering it again cannot help, and it must not hold up the rest.
            logger.error("stream record skipped", reason=exc.message)
            metrics.add_metric(name="StreamRecordSkipped", unit="Count", value=1)
            continue
        events.extend(derived)
        origins.extend(change.sequence_number for _ in derived)  # type: ignore[union-attr]
    put = deps.events.put(events)
    for event in events[:put]:
        logger.info(
            "connection event published",
            detail_type=event.detail_type,
            event_id=event.detail["event_id"],
            connection_id=event.detail["connection_id"],
        )
    failures = [{"itemIdentifier": origins[put]}] if put < len(events) else []
    return {"batchItemFailures": failures}


def replay_dead_letters(deps: Deps) -> dict[str, int]:
    """Announce the batches the event source gave up on, while the stream still holds them.
    A batch is deleted from the queue once all its events are put; one whose records the stream
    no longer holds (after 24 hours) is deleted too, and counted and logged as lost. A message
    that is not an on-failure record of this table is left for a person."""
    if deps.failed_batches is None or deps.stream is None:
        raise ConfigurationError("EVENTS_DEAD_LETTER_QUEUE_URL is not set")
    counts = {"replayed": 0, "lost": 0, "not_ours": 0, "failed": 0}
    while deps.time_left() > REPLAY_MARGIN_SECONDS and not counts["failed"]:
        letters = deps.failed_batches.receive(visibility_seconds=REPLAY_VISIBILITY_SECONDS)
        if not letters:
            break
        for letter in letters:
            outcome = _replay(deps, letter)
            counts[outcome] += 1
            if outcome == "failed":
                break  # the rest become visible again after the timeout
    logger.info("dead letters replayed", counts=counts)
    return counts


def _replay(deps: Deps, letter: DeadLetter) -> str:
    assert deps.failed_batches is not None and deps.stream is not None
    try:
        batch = parse_failed_batch(letter.body, deps.settings.table_name)
    except InvalidRequest as exc:
        logger.warning("dead letter is not a failed batch of this table", reason=exc.message)
        return "not_ours"
    try:
        records = deps.stream.read(batch)
    except StreamRecordsExpired:
        logger.error("failed batch lost: the stream no longer holds it", first=batch.first, last=batch.last)
        metrics.add_metric(name="EventsLost", unit="Count", value=1)
        deps.failed_batches.delete(letter)
        return "lost"
    except BrokerError as exc:
        logger.warning("failed batch not read", error=exc.code)
        return "failed"
    if announce_records(deps, records)["batchItemFailures"]:
        return "failed"
    deps.failed_batches.delete(letter)
    return "replayed"
