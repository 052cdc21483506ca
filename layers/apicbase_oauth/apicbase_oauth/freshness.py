"""When a connection's access token is refreshed: one decision, for every path that refreshes.

A *margin* is how long before its expiry an access token is refreshed: the demand margin (GET
token, the proxy; ``TokenLeewaySeconds``), the schedule margin (the scheduler and the worker;
``RefreshWindowHours``), and the serving margin: a token that expires later than that still
serves when a refresh cannot happen now. The defaults and ranges are ``config.TUNABLES``'.
"""

from __future__ import annotations

from .config import Settings
from .errors import RateLimited
from .model import NEEDS_REAUTHORIZATION, Connection, immutable

# A token that expires later than this is still worth handing out when a refresh cannot happen.
SERVING_MARGIN_SECONDS = 30

# Reasons (the second half of ``should_refresh``'s answer).
FRESH = "fresh"
EXPIRING = "expiring"
FORCED = "forced"
RATE_LIMITED = "rate_limited"
NEEDS_REAUTHORIZATION_REASON = NEEDS_REAUTHORIZATION


@immutable
class Purpose:
    """Why a refresh is asked for, and the margin it asks with."""

    name: str
    margin: int  # refresh when the access token expires within this many seconds
    force: bool = False  # refresh whatever the expiry
    respect_backoff: bool = False  # a connection whose next attempt is later is left alone
    honours_retry_after: bool = True  # no refresh while Apicbase's Retry-After runs


def on_demand(settings: Settings) -> Purpose:
    """GET token and the proxy: a token about to expire is refreshed before it is handed out."""
    return Purpose("on_demand", settings.demand_margin_seconds)


def scheduled(settings: Settings) -> Purpose:
    """The worker: the scheduler queued the connection by the same margin."""
    return Purpose("scheduled", settings.schedule_margin_seconds, respect_backoff=True)


# The admin API's POST /connections/{id}/refresh: now, unless Apicbase asked to wait.
ADMIN = Purpose("admin", 0, force=True)
# A token Apicbase answered 401 to (POST token, the proxy's retry): replaced now.
REJECTED = Purpose("rejected", 0, force=True, honours_retry_after=False)


def should_refresh(connection: Connection, now: int, purpose: Purpose) -> tuple[bool, str]:
    """Whether to refresh ``connection`` at ``now`` for ``purpose``, and why (a reason above)."""
    if connection.status == NEEDS_REAUTHORIZATION:
        return False, NEEDS_REAUTHORIZATION_REASON
    expiring = connection.expires_at - now <= purpose.margin
    if not purpose.force and not expiring:
        return False, FRESH
    if purpose.honours_retry_after and retry_after(connection, now):
        return False, RATE_LIMITED
    return True, FORCED if purpose.force else EXPIRING


def retry_after(connection: Connection, now: int) -> int:
    """Seconds left of the Retry-After Apicbase gave the connection's last refresh (0: none): until
    then no path presents its refresh token, so nobody spends a request Apicbase would refuse."""
    if connection.last_error != "rate_limited" or not connection.next_attempt_at:
        return 0
    return max(connection.next_attempt_at - now, 0)


def asked_to_wait(connection: Connection, now: int) -> RateLimited:
    """The error that passes Apicbase's Retry-After on."""
    return RateLimited(
        f"Apicbase asked to wait before connection {connection.connection_id} is refreshed",
        retry_after=retry_after(connection, now),
    )


def still_serves(connection: Connection, now: int) -> bool:
    """The token expires later than the serving margin: worth handing out without a refresh."""
    return connection.expires_at - now > SERVING_MARGIN_SECONDS
