"""Keep alive, scheduled: the tick that queues due connections (and parked pairs), and the
worker's handling of one SQS message."""

from __future__ import annotations

from .adapters.queue import decode
from .custody import apply_parked
from .deps import Deps
from .errors import ConfigurationError, ConnectionNotFound, NeedsReauthorization, RefreshInProgress
from .freshness import scheduled
from .model import immutable
from .observability import logger, metrics
from .refresh import PERMANENT_FAILURES, RESCUED, refresh_connection

# Outcomes a redelivery would not change. Permanent failures are recorded with a backoff (and
# alarmed): the scheduler queues the connection again, not SQS.
_SETTLED: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (RefreshInProgress, "in_progress_elsewhere"),
    (NeedsReauthorization, "needs_reauthorization"),
    (ConnectionNotFound, "connection_gone"),
    (PERMANENT_FAILURES, "failed_permanently"),
)


@immutable
class QueueReport:
    due: int
    queued: int
    failed: int
    parked: int = 0


def queue_due_refreshes(deps: Deps) -> QueueReport:
    """The schedule's tick: queue every connection whose token expires within the window, and
    every parked pair (its message asks the worker to apply it)."""
    if deps.queue is None:
        raise ConfigurationError("REFRESH_QUEUE_URL is not set")
    now = int(deps.now())
    margin = scheduled(deps.settings).margin
    found = list(deps.connections.due_connections(due_before=now + margin, now=now))
    due = [cid for cid, parked in found if not parked]
    parked = [cid for cid, is_parked in found if is_parked]
    sent, failed = deps.queue.send(due, queued_at=now)
    swept, unswept = deps.queue.send(parked, queued_at=now, sweep=True) if parked else (0, 0)
    metrics.add_metric(name="RefreshesQueued", unit="Count", value=sent)
    logger.info("due connections queued", due=len(due), queued=sent, failed=failed + unswept, parked=len(parked))
    return QueueReport(due=len(due), queued=sent + swept, failed=failed + unswept, parked=len(parked))


def refresh_from_message(deps: Deps, body: str) -> str:
    """One SQS record. Returns the outcome; raises (the record fails, SQS retries) on failures
    worth retrying, OutOfTime included. Duplicates and out-of-order messages are harmless: the
    lease and the freshness check make a second delivery a no-op, and a connection backing off
    is left alone. A parked pair (in the message, or the table's rescue item) is applied."""
    message = decode(body)
    if message.rescue or message.sweep:
        rescue = message.rescue or deps.connections.parked(message.connection_id)
        if rescue is None:
            return "rescue_gone"
        return RESCUED if apply_parked(deps, rescue) is not None else "rescue_stale"
    try:
        result = refresh_connection(deps, message.connection_id, scheduled(deps.settings))
    except (RefreshInProgress, NeedsReauthorization, ConnectionNotFound, *PERMANENT_FAILURES) as exc:
        return next(outcome for kinds, outcome in _SETTLED if isinstance(exc, kinds))
    return result.outcome
