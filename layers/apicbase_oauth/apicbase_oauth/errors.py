"""The broker's error taxonomy.

Adapters translate botocore ``ClientError`` codes and Apicbase's OAuth ``error`` codes into these
exceptions once; use cases and handlers only ever see these. Every message is safe to show and
to log: no token, code, state or secret is ever put in one.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class: an HTTP status, a stable machine-readable code and a human message."""

    status = 500
    code = "internal_error"
    # Set by the callback once a session is known, so its page can hand over to the integrator.
    return_url: str | None = None
    connection_id: str | None = None

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


# --- bad input (4xx, nothing changed) -------------------------------------------------------
class InvalidRequest(BrokerError):
    status = 400
    code = "invalid_request"


class ConnectionNotFound(BrokerError):
    status = 404
    code = "connection_not_found"


class InvalidState(BrokerError):
    """The callback's state is missing, forged, expired or already used."""

    status = 400
    code = "invalid_state"


class AuthorizationDenied(BrokerError):
    """Apicbase redirected back with ``error=`` (the person declined, or the request was bad)."""

    status = 400
    code = "access_denied"


class NeedsReauthorization(BrokerError):
    status = 409
    code = "needs_reauthorization"


class RefreshInProgress(BrokerError):
    """Another refresher holds this connection's lease."""

    status = 409
    code = "refresh_in_progress"


# --- Apicbase's answers ----------------------------------------------------------------------
class ApicbaseError(BrokerError):
    status = 502
    code = "apicbase_error"


class InvalidGrant(ApicbaseError):
    """The code or refresh token is expired, used, revoked, or was issued to another client."""

    status = 400
    code = "invalid_grant"


class InvalidClient(ApicbaseError):
    """Apicbase rejected the client id or secret: the broker's configuration is wrong."""

    status = 502
    code = "invalid_client"


class ApicbaseRejected(ApicbaseError):
    """Any other OAuth error (invalid_scope, invalid_request, unexpected 4xx)."""

    status = 502
    code = "apicbase_rejected"


class RateLimited(ApicbaseError):
    status = 503
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApicbaseUnavailable(ApicbaseError):
    """5xx, timeouts, connection errors.

    ``request_sent`` is False only when the request surely never reached Apicbase (a connect
    error): only then may a refresh be retried blindly.
    """

    status = 503
    code = "apicbase_unavailable"

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class MalformedResponse(ApicbaseError):
    """A 2xx that is not a usable token response (HTML, truncated JSON, wrong types)."""

    status = 502
    code = "malformed_response"


# --- our own dependencies ----------------------------------------------------------------------
class DependencyUnavailable(BrokerError):
    """An AWS dependency failed. ``retryable`` for throttling and 5xx."""

    status = 503
    code = "dependency_unavailable"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConfigurationError(BrokerError):
    """Settings or client credentials are missing or invalid."""

    status = 500
    code = "configuration_error"


class TokenUnreadable(BrokerError):
    """A stored ciphertext does not decrypt for this connection (tampered or copied)."""

    status = 500
    code = "token_unreadable"


class ConditionFailed(Exception):
    """Internal: a DynamoDB condition did not hold. ``item`` is the item as it was, if any."""

    def __init__(self, item: dict | None) -> None:
        super().__init__("condition failed")
        self.item = item
