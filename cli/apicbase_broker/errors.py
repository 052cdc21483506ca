"""The broker's errors as exceptions, mapped from its JSON answers ``{"error": {"code", "message"}}``.

The API's messages never contain a token, and these exceptions add none: ``str`` is the
message, ``repr`` the status, code and message. Nothing here reads a response's body beyond
the error document, so a token in a body can never end up in an exception.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any


class BrokerError(Exception):
    """The broker answered an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Task queues (Celery, multiprocessing) pickle exceptions; the default rebuilds from args alone.
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(kind: type[BrokerError], state: dict[str, Any]) -> BrokerError:
    error = kind.__new__(kind)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class ConfigurationError(BrokerError):
    """No usable API URL, stack, region or AWS credentials: nothing was sent. ``code``:
    ``no_api_url`` (nothing names the broker), ``stack_unreadable``, else ``configuration``."""

    def __init__(self, message: str, code: str = "configuration") -> None:
        super().__init__(0, code, message)


class NeedsReauthorization(BrokerError):
    """The grant is gone (revoked, or a rotation lost): a person must connect the library again."""


class ConnectionNotFound(BrokerError):
    """No connection with this id."""


class Busy(BrokerError):
    """A refresh is in flight, or the broker, AWS or Apicbase is overloaded: retry after ``retry_after`` s."""


class RateLimited(Busy):
    """429: the broker's budget per Apicbase user, API Gateway's throttle, or (from ``paginate``,
    after waiting as long as it may) Apicbase's own limit: retry after ``retry_after`` s."""


# Answered while something else is in flight or overloaded; worth a retry later, not a fix.
BUSY_CODES = frozenset({"refresh_in_progress", "rate_limited", "apicbase_unavailable", "dependency_unavailable"})


def is_error_document(body: Any) -> bool:
    """Whether ``body`` is the broker's own error document (Apicbase's errors look otherwise)."""
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str)


def error_from(status: int, body: Any, headers: Mapping[str, str]) -> BrokerError:
    """The exception for an error answer of the broker's API (or of API Gateway in front of it)."""
    if is_error_document(body):
        code, message = str(body["error"]["code"]), str(body["error"].get("message", ""))
    else:
        # API Gateway's own answers (signature refused, throttled) are {"message": "..."}.
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        code = {403: "forbidden", 404: "not_found", 429: "throttled"}.get(status, "http_error")
    message = message or f"HTTP {status}"
    kind: type[BrokerError] = BrokerError
    if code == "needs_reauthorization":
        kind = NeedsReauthorization
    elif code == "connection_not_found":
        kind = ConnectionNotFound
    elif status == 429:
        kind = RateLimited
    elif code in BUSY_CODES or status == 503:
        kind = Busy
    return kind(status, code, message, retry_after=retry_after(headers.get("Retry-After")))


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() also takes
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
