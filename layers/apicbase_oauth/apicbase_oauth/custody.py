"""Presenting a grant to Apicbase and keeping what comes back: shared by connect and refresh.

- ``present``: call Apicbase with an application's client credentials; after ``invalid_client``
  re-read the secret once and, if it was rotated, try once more. Apicbase authenticates the
  client before it looks at the code or refresh token, so that retry cannot burn either.
- ``seal_and_save``: encrypt a pair, then the write that must land, each with backoff: the
  tokens exist only in memory until it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .adapters.apicbase import ClientCredentials, TokenResponse
from .deps import Deps
from .errors import ConfigurationError, DependencyUnavailable, InvalidClient
from .model import Connection, TokenPair
from .observability import logger, metrics

T = TypeVar("T")


def with_backoff(
    operation: Callable[[], T],
    *,
    attempts: int = 8,
    base_delay: float = 0.05,
    sleep: Callable[[float], None],
) -> T:
    """Retry a write that must land (a rotated refresh token exists only in memory).

    ``sleep`` is the use case's (``deps.sleep``), so tests wait on their clock, not for real.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except DependencyUnavailable as exc:
            if not exc.retryable or attempt == attempts - 1:
                raise
            sleep(min(base_delay * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def present(
    deps: Deps, credentials: ClientCredentials, call: Callable[..., T], *, connection_id: str, **grant: Any
) -> tuple[ClientCredentials, T]:
    """``call(credentials, **grant)`` (an Apicbase client method), once more with a rotated secret
    after invalid_client.

    Returns the credentials that worked with the answer. A rejection that stands is counted
    (the ``InvalidClient`` alarm) and raised.
    """
    try:
        return credentials, call(credentials, **grant)
    except InvalidClient:
        fresh = deps.credentials.get(credentials.application, force_fetch=True)
        if fresh != credentials:
            check_client(fresh, credentials.client_id, connection_id)
            logger.info("client secret changed; retrying once", connection_id=connection_id)
            try:
                return fresh, call(fresh, **grant)
            except InvalidClient:
                pass
        metrics.add_metric(name="InvalidClient", unit="Count", value=1)
        logger.error(
            "Apicbase rejected the client credentials; fix the secret",
            application=credentials.application,
            client_id=credentials.client_id,
        )
        raise


def check_client(credentials: ClientCredentials, client_id: str, connection_id: str) -> None:
    """A grant must be presented by the application (client id) that it was issued to."""
    if credentials.client_id != client_id:
        raise ConfigurationError(
            f"connection {connection_id} belongs to client {client_id}, but application "
            f"{credentials.application!r} in the secret now has client {credentials.client_id}",
            code="client_mismatch",
        )


def seal_and_save(
    deps: Deps, connection_id: str, pair: TokenPair, write: Callable[..., Connection], /, **fields: Any
) -> Connection:
    """Encrypt ``pair`` for the connection, then ``write(tokens=ciphertext, **fields)`` (a store
    method); both with backoff."""
    ciphertext = with_backoff(lambda: deps.cipher.encrypt(connection_id, pair), sleep=deps.sleep)
    return with_backoff(lambda: write(tokens=ciphertext, **fields), sleep=deps.sleep)


def report_oddities(response: TokenResponse, connection_id: str) -> None:
    """Say loudly what was odd in a token response that was stored anyway (``OddTokenResponse``)."""
    if response.oddities:
        metrics.add_metric(name="OddTokenResponse", unit="Count", value=1)
        logger.error(
            "Apicbase's token response was odd; the tokens were stored with a safe expiry",
            connection_id=connection_id,
            oddities=list(response.oddities),
            expires_in=response.expires_in,
        )
