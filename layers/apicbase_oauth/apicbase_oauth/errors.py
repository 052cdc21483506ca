"""The broker's error taxonomy.

Adapters translate botocore ``ClientError`` codes and Apicbase's OAuth ``error`` codes into these
exceptions once; use cases and handlers only ever see these. Every message is safe to show and
to log: no token, code, state or secret is ever put in one. The HTTP status of each is chosen at
the edge (``http.status_of``), not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Connection


class BrokerError(Exception):
    """Base class: a stable machine-readable code and a human message."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


# --- bad input (nothing changed) -------------------------------------------------------------
class InvalidRequest(BrokerError):
    code = "invalid_request"


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not one this API handed out")


class ConnectionNotFound(BrokerError):
    code = "connection_not_found"


class InvalidState(BrokerError):
    """The callback's state is missing, forged, expired or already used."""

    code = "invalid_state"


class BrowserMismatch(InvalidState):
    """The callback came from a browser that did not open the session's connect_url (login CSRF,
    RFC 9700 4.7.1): its binder cookie is missing or is another session's."""

    code = "browser_mismatch"


class AuthorizationDenied(BrokerError):
    """Apicbase redirected back with ``error=`` (the person declined, or the request was bad)."""

    code = "access_denied"


class IdentityMismatch(AuthorizationDenied):
    """The person signed in to Apicbase as another user than the session's expected_username."""

    code = "identity_mismatch"


class NeedsReauthorization(BrokerError):
    code = "needs_reauthorization"

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} needs to be connected again")


class RefreshInProgress(BrokerError):
    """Another refresher holds this connection's lease."""

    code = "refresh_in_progress"


class RefreshStillRunning(RefreshInProgress):
    """Another refresher held the lease for longer than a caller waits: try again shortly."""


# --- Apicbase's answers ----------------------------------------------------------------------
class ApicbaseError(BrokerError):
    code = "apicbase_error"


class InvalidGrant(ApicbaseError):
    """The code or refresh token is expired, used, revoked, or was issued to another client."""

    code = "invalid_grant"


class InvalidClient(ApicbaseError):
    """Apicbase rejected the client id or secret: the broker's configuration is wrong."""

    code = "invalid_client"


class ApicbaseRejected(ApicbaseError):
    """Any other OAuth error (invalid_scope, invalid_request, unexpected 4xx)."""

    code = "apicbase_rejected"


class RateLimited(ApicbaseError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApicbaseUnavailable(ApicbaseError):
    """5xx, timeouts, connection errors.

    ``request_sent`` is False only when the request surely never reached Apicbase (a connect
    error): only then may a refresh be retried blindly.
    """

    code = "apicbase_unavailable"

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class IdentityUnverified(ApicbaseUnavailable):
    """A session names an expected_username, and Apicbase could not tell who signed in."""

    code = "identity_unverified"


class MalformedResponse(ApicbaseUnavailable):
    """A 2xx that is not a usable token response (HTML, truncated JSON, no usable refresh token,
    a refresh token with a space). Apicbase answered, so it may have carried the grant out and
    rotated: like a lost answer, its outcome is unknown (the witness decides), never a rejection."""

    code = "malformed_response"

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message, request_sent=request_sent)


# --- the proxy to Apicbase's API ---------------------------------------------------------------
class OverBudget(BrokerError):
    """The Apicbase user's budget for this minute is spent: the broker answers 429 itself."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApicbaseTimeout(ApicbaseError):
    """Apicbase's API did not answer in time; the request may have been carried out."""

    code = "apicbase_timeout"


class ResponseTooLarge(ApicbaseError):
    """Apicbase's answer does not fit in a Lambda response."""

    code = "response_too_large"


# --- our own dependencies ----------------------------------------------------------------------
class DependencyUnavailable(BrokerError):
    """An AWS dependency failed. ``retryable`` for throttling and 5xx."""

    code = "dependency_unavailable"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class OutOfTime(BrokerError):
    """Too little time is left (in the function, or on the lease) to present a grant to Apicbase
    and store its answer: nothing was presented; try again."""

    code = "out_of_time"


class TokensParked(DependencyUnavailable):
    """Apicbase's answer could not be written to its connection, so it was parked (sealed) in the
    rescue place, from where it is applied before any later refresh: nothing is lost."""

    code = "tokens_parked"


class ConfigurationError(BrokerError):
    """Settings or client credentials are missing or invalid."""

    code = "configuration_error"


class UnknownApplication(ConfigurationError):
    """A request named an application that the client-credentials secret does not hold."""

    code = "unknown_application"


class TokenUnreadable(BrokerError):
    """A stored ciphertext does not decrypt for this connection (tampered or copied)."""

    code = "token_unreadable"


class StreamRecordsExpired(BrokerError):
    """A failed batch of stream records is no longer in the stream (DynamoDB keeps 24 hours)."""

    code = "stream_records_expired"


class ConditionFailed(Exception):
    """Internal: a conditional write did not hold (the version moved on, or the lease was lost)."""

    def __init__(self) -> None:
        super().__init__("condition failed")


class LeaseHeld(ConditionFailed):
    """The refresh lease could not be taken: leased by another refresher, not active, or (on the
    scheduled path) backing off. ``connection`` is the connection as it is now."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection
