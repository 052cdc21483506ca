"""The broker's use cases. Handlers call these and nothing below them."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import validation
from .apicbase import ClientCredentials, Introspection, TokenResponse
from .crypto import TokenPair
from .deps import Deps
from .errors import (
    ApicbaseError,
    AuthorizationDenied,
    BrokerError,
    ConfigurationError,
    ConnectionNotFound,
    DependencyUnavailable,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidState,
    MalformedResponse,
    NeedsReauthorization,
    RefreshInProgress,
)
from .events import CONNECTION_CREATED, CONNECTION_DISCONNECTED
from .observability import logger, metrics
from .queue import decode
from .refresh import PERMANENT_FAILURES, refresh_connection
from .store import NEEDS_REAUTHORIZATION, Connection, ConnectSession, with_backoff

_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")
# How long GET /token waits for another caller's refresh before answering 503.
WAIT_FOR_REFRESH_SECONDS = 5.0
# Apicbase's documented OAuth error answers on the redirect; anything else is reported generically.
_REDIRECT_ERRORS = {
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
}


def iso(epoch: int | float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def connection_view(connection: Connection) -> dict[str, Any]:
    """What the admin API shows of a connection: everything but the tokens."""
    return {
        "connection_id": connection.connection_id,
        "application": connection.application,
        "client_id": connection.client_id,
        "status": connection.status,
        "scope": connection.scope,
        "username": connection.username,
        "expires_at": iso(connection.expires_at),
        "created_at": iso(connection.created_at),
        "updated_at": iso(connection.updated_at),
        "last_refresh_at": iso(connection.last_refresh_at),
        "refresh_count": connection.refresh_count,
        "consecutive_failures": connection.consecutive_failures,
        "next_attempt_at": iso(connection.next_attempt_at),
        "last_error": connection.last_error,
        "reauthorization_reason": connection.reauthorization_reason,
        "source": connection.source,
        "version": connection.version,
    }


# --- connect ------------------------------------------------------------------------------------
def start_connect_session(deps: Deps, body: Any, *, request_domain: str | None) -> dict[str, Any]:
    fields = validation.body_fields(body, required={"connection_id"}, optional={"scopes", "return_url", "application"})
    connection_id = validation.connection_id(fields["connection_id"])
    scopes = validation.scopes(fields.get("scopes"), deps.settings.default_scopes)
    return_url = validation.return_url(fields.get("return_url"))
    application = validation.application(fields.get("application"))
    credentials = deps.credentials.get(application)
    redirect_uri = _redirect_uri(deps, request_domain)

    state = secrets.token_urlsafe(32)
    verifier = challenge = None
    if deps.settings.pkce_enabled:
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    expires_at = int(deps.now()) + deps.settings.state_ttl_seconds
    deps.store.put_session(
        state,
        ConnectSession(
            connection_id=connection_id,
            application=application,
            client_id=credentials.client_id,
            scopes=scopes,
            redirect_uri=redirect_uri,
            return_url=return_url,
            code_verifier=verifier,
            expires_at=expires_at,
        ),
    )
    logger.info("connect session started", connection_id=connection_id, application=application)
    return {
        "authorize_url": deps.apicbase.authorize_url(
            client_id=credentials.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            code_challenge=challenge,
        ),
        "state": state,
        "expires_at": iso(expires_at),
        "connection_id": connection_id,
        "redirect_uri": redirect_uri,
        "scopes": list(scopes),
    }


def _redirect_uri(deps: Deps, request_domain: str | None) -> str:
    if deps.settings.callback_url:
        return deps.settings.callback_url
    if not request_domain or not _HOST_RE.match(request_domain):
        raise ConfigurationError("CALLBACK_URL is not set and the request has no usable domain name")
    return f"https://{request_domain}/oauth/callback"


@dataclass(frozen=True)
class CallbackResult:
    connection: Connection
    return_url: str | None


def complete_callback(deps: Deps, params: Mapping[str, str]) -> CallbackResult:
    """Consume the state, then (and only then) exchange the code and store the connection.

    A failure after the state was consumed carries the session's ``return_url`` and
    ``connection_id`` on the exception, so the integrator's page can take over.
    """
    state = params.get("state")
    if not state or not validation.STATE_RE.match(state):
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState("This sign-in link is not valid. Start connecting again from your application.")
    session = deps.store.consume_session(state)
    if session is None:
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState(
            "This sign-in link has expired or was already used. Start connecting again from your application."
        )
    try:
        error = params.get("error")
        if error is not None:
            code = error if error in _REDIRECT_ERRORS else "authorization_failed"
            logger.info("authorization not granted", connection_id=session.connection_id, error=code)
            if code == "access_denied":
                raise AuthorizationDenied("Access was not granted, so nothing was connected.")
            raise AuthorizationDenied(f"Apicbase did not authorize the request ({code}).", code=code)
        connection = _exchange_and_store(
            deps,
            connection_id=session.connection_id,
            application=session.application,
            expected_client_id=session.client_id,
            code=validation.authorization_code(params.get("code")),
            redirect_uri=session.redirect_uri,
            code_verifier=session.code_verifier,
            source="callback",
        )
    except BrokerError as exc:
        exc.return_url = session.return_url
        exc.connection_id = session.connection_id
        raise
    return CallbackResult(connection=connection, return_url=session.return_url)


def exchange_pasted_code(deps: Deps, connection_id: str, body: Any) -> dict[str, Any]:
    """A code a person copied from Apicbase's page (no redirect URL configured)."""
    connection_id = validation.connection_id(connection_id)
    fields = validation.body_fields(body, required={"code"}, optional={"application", "redirect_uri"})
    redirect_uri = fields.get("redirect_uri")
    if redirect_uri is not None:
        redirect_uri = validation.return_url(redirect_uri)
    connection = _exchange_and_store(
        deps,
        connection_id=connection_id,
        application=validation.application(fields.get("application")),
        expected_client_id=None,
        code=validation.authorization_code(fields["code"]),
        redirect_uri=redirect_uri,
        code_verifier=None,
        source="pasted_code",
    )
    return connection_view(connection)


def _exchange_and_store(
    deps: Deps,
    *,
    connection_id: str,
    application: str,
    expected_client_id: str | None,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    source: str,
) -> Connection:
    credentials = deps.credentials.get(application)
    if expected_client_id and credentials.client_id != expected_client_id:
        raise ConfigurationError(
            "the application's client id changed during the sign-in; start connecting again",
            code="client_mismatch",
        )
    # The code lives 60 seconds: exchange it before anything else.
    try:
        credentials, tokens = _exchange_code(
            deps, credentials, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
    except InvalidGrant:
        metrics.add_metric(name="CodeRejected", unit="Count", value=1)
        raise InvalidGrant(
            "The authorization code has expired (codes live 60 seconds) or was already used. Start connecting again."
        ) from None
    except InvalidClient:
        metrics.add_metric(name="InvalidClient", unit="Count", value=1)
        logger.error("Apicbase rejected the client credentials; fix the secret", application=application)
        raise
    if tokens.refresh_token is None:
        raise MalformedResponse(
            "Apicbase's token response has no refresh_token; the connection could not be kept alive"
        )
    # Store the grant before asking who the user is: a slow introspection must not be able to
    # outlast the function's timeout while the only copy of a fresh refresh token is in memory.
    connection = _store_grant(
        deps,
        connection_id=connection_id,
        credentials=credentials,
        pair=TokenPair(tokens.access_token, tokens.refresh_token),
        expires_at=tokens.expires_at,
        scope=tokens.scope,
        username=None,
        source=source,
    )
    introspection = _introspect_quietly(deps, credentials, tokens.access_token, connection_id)
    if introspection and introspection.active and (introspection.username or introspection.scope):
        connection = deps.store.record_identity(
            connection, username=introspection.username, scope=None if tokens.scope else introspection.scope
        )
    _announce_created(deps, connection)
    return connection


def _exchange_code(
    deps: Deps, credentials: ClientCredentials, *, code: str, redirect_uri: str | None, code_verifier: str | None
) -> tuple[ClientCredentials, TokenResponse]:
    """Exchange the code; after invalid_client, once more if the secret was rotated meanwhile.

    Apicbase authenticates the client before it looks at the code, so the retry cannot burn it.
    """
    try:
        return credentials, deps.apicbase.exchange_code(
            credentials, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
    except InvalidClient:
        fresh = deps.credentials.get(credentials.application, force_fetch=True)
        if fresh == credentials or fresh.client_id != credentials.client_id:
            raise
        logger.info("client secret changed; retrying the exchange once", application=credentials.application)
        return fresh, deps.apicbase.exchange_code(
            fresh, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )


def _introspect_quietly(
    deps: Deps, credentials: ClientCredentials, access_token: str, connection_id: str
) -> Introspection | None:
    """The username is nice to have: a failed introspection does not fail a connect."""
    try:
        return deps.apicbase.introspect(credentials, token=access_token)
    except ApicbaseError as exc:
        logger.warning("introspection failed", connection_id=connection_id, error=exc.code)
        return None


def _store_grant(
    deps: Deps,
    *,
    connection_id: str,
    credentials: ClientCredentials,
    pair: TokenPair,
    expires_at: int,
    scope: str | None,
    username: str | None,
    source: str,
) -> Connection:
    try:
        ciphertext = with_backoff(lambda: deps.cipher.encrypt(connection_id, pair), sleep=deps.sleep)
        connection = with_backoff(
            lambda: deps.store.save_tokens(
                connection_id=connection_id,
                application=credentials.application,
                client_id=credentials.client_id,
                tokens=ciphertext,
                expires_at=expires_at,
                scope=scope,
                username=username,
                source=source,
            ),
            sleep=deps.sleep,
        )
    except DependencyUnavailable:
        metrics.add_metric(name="GrantNotStored", unit="Count", value=1)
        logger.error("tokens were issued but could not be stored", connection_id=connection_id)
        raise
    metrics.add_metric(name="ConnectionCreated", unit="Count", value=1)
    logger.info("connection stored", connection_id=connection_id, source=source, version=connection.version)
    return connection


def _announce_created(deps: Deps, connection: Connection) -> None:
    deps.events.publish(
        CONNECTION_CREATED,
        {
            "connection_id": connection.connection_id,
            "application": connection.application,
            "client_id": connection.client_id,
            "username": connection.username,
            "scope": connection.scope,
            "source": connection.source,
            "reconnected": connection.version > 1,
        },
    )


def import_tokens(deps: Deps, connection_id: str, body: Any) -> dict[str, Any]:
    """Tokens obtained elsewhere. Without expires_in, introspection tells the expiry."""
    connection_id = validation.connection_id(connection_id)
    fields = validation.body_fields(
        body, required={"access_token", "refresh_token"}, optional={"expires_in", "application"}
    )
    access_token = validation.token(fields["access_token"], "access_token")
    refresh_token = validation.token(fields["refresh_token"], "refresh_token")
    expires_in = validation.expires_in(fields.get("expires_in"))
    credentials = deps.credentials.get(validation.application(fields.get("application")))
    introspection = _introspect_quietly(deps, credentials, access_token, connection_id)
    now = int(deps.now())
    if expires_in is not None:
        expires_at = now + expires_in
    elif introspection and introspection.active and introspection.exp:
        expires_at = introspection.exp
    else:
        expires_at = now  # unknown: due at once, the next refresh tells
    connection = _store_grant(
        deps,
        connection_id=connection_id,
        credentials=credentials,
        pair=TokenPair(access_token, refresh_token),
        expires_at=expires_at,
        scope=introspection.scope if introspection and introspection.active else None,
        username=introspection.username if introspection and introspection.active else None,
        source="import",
    )
    _announce_created(deps, connection)
    return connection_view(connection)


# --- read ---------------------------------------------------------------------------------------
def describe_connection(deps: Deps, connection_id: str, *, introspect: bool = False) -> dict[str, Any]:
    connection = deps.store.get(validation.connection_id(connection_id))
    view = connection_view(connection)
    if introspect:
        pair = deps.cipher.decrypt(connection.connection_id, connection.tokens)
        credentials = deps.credentials.get(connection.application)
        result = deps.apicbase.introspect(credentials, token=pair.access_token)
        view["introspection"] = {
            "active": result.active,
            "scope": result.scope,
            "exp": iso(result.exp),
            "client_id": result.client_id,
            "username": result.username,
        }
    return view


def list_connections(deps: Deps, query: Mapping[str, str]) -> dict[str, Any]:
    raw_limit = query.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("limit must be a whole number from 1 to 100", code="invalid_limit")
    cursor = query.get("cursor")
    if cursor is not None and (len(cursor) > 1024 or not cursor):
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor")
    summaries, next_cursor = deps.store.list(limit=int(raw_limit), cursor=cursor)
    return {
        "connections": [
            {
                "connection_id": s.connection_id,
                "status": s.status,
                "application": s.application,
                "scope": s.scope,
                "username": s.username,
                "updated_at": iso(s.updated_at),
            }
            for s in summaries
        ],
        "next_cursor": next_cursor,
    }


def get_token(deps: Deps, connection_id: str) -> dict[str, Any]:
    """A valid access token, refreshed on demand (single flight) when it expires within the leeway."""
    connection_id = validation.connection_id(connection_id)
    leeway = deps.settings.token_leeway_seconds
    connection = deps.store.get(connection_id)
    pair: TokenPair | None = None
    if connection.status == NEEDS_REAUTHORIZATION:
        raise NeedsReauthorization(f"connection {connection_id} needs to be connected again")
    if connection.expires_at - int(deps.now()) <= leeway:
        connection, pair = _refresh_on_demand(deps, connection)
    if pair is None:
        pair = deps.cipher.decrypt(connection_id, connection.tokens)
    return _token_view(deps, connection, pair)


def _refresh_on_demand(deps: Deps, connection: Connection) -> tuple[Connection, TokenPair | None]:
    leeway = deps.settings.token_leeway_seconds
    waited = 0.0
    delay = 0.1
    while True:
        try:
            result = refresh_connection(deps, connection.connection_id, min_validity=leeway)
            return result.connection, result.tokens
        except RefreshInProgress:
            # Someone else is refreshing: wait briefly for their result rather than refresh twice.
            if waited >= WAIT_FOR_REFRESH_SECONDS:
                raise RefreshInProgress(
                    f"connection {connection.connection_id} is being refreshed; try again in a few seconds",
                    status=503,
                ) from None
            deps.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)
            latest = deps.store.get(connection.connection_id)
            if latest.expires_at - int(deps.now()) > leeway:
                return latest, None
        except (ApicbaseError, DependencyUnavailable):
            # The refresh failed, but a token that is still valid is still useful.
            if connection.expires_at - int(deps.now()) > 30:
                logger.warning(
                    "on-demand refresh failed; returning the current token", connection_id=connection.connection_id
                )
                return connection, None
            raise


def _token_view(deps: Deps, connection: Connection, pair: TokenPair) -> dict[str, Any]:
    return {
        "connection_id": connection.connection_id,
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_at": iso(connection.expires_at),
        "expires_in": max(connection.expires_at - int(deps.now()), 0),
        "scope": connection.scope,
    }


def force_refresh(deps: Deps, connection_id: str) -> dict[str, Any]:
    result = refresh_connection(deps, validation.connection_id(connection_id), min_validity=0, force=True)
    view = connection_view(result.connection)
    view["outcome"] = result.outcome
    return view


def disconnect(deps: Deps, connection_id: str) -> None:
    connection = deps.store.delete(validation.connection_id(connection_id))
    metrics.add_metric(name="ConnectionDeleted", unit="Count", value=1)
    logger.info("connection deleted", connection_id=connection.connection_id)
    deps.events.publish(
        CONNECTION_DISCONNECTED,
        {
            "connection_id": connection.connection_id,
            "application": connection.application,
            "username": connection.username,
        },
    )


# --- schedule ------------------------------------------------------------------------------------
def queue_due_refreshes(deps: Deps) -> dict[str, int]:
    if deps.queue is None:
        raise ConfigurationError("REFRESH_QUEUE_URL is not set")
    now = int(deps.now())
    due = list(deps.store.due_connections(due_before=now + deps.settings.refresh_window_seconds, now=now))
    sent, failed = deps.queue.send(due, queued_at=now)
    metrics.add_metric(name="RefreshesQueued", unit="Count", value=sent)
    logger.info("due connections queued", due=len(due), queued=sent, failed=failed)
    return {"due": len(due), "queued": sent, "failed": failed}


def refresh_from_message(deps: Deps, body: Any) -> str:
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


def parse_introspect_flag(value: str | None) -> bool:
    if value in (None, "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise InvalidRequest("introspect must be true or false", code="invalid_introspect")


__all__ = [
    "CallbackResult",
    "complete_callback",
    "connection_view",
    "describe_connection",
    "disconnect",
    "exchange_pasted_code",
    "force_refresh",
    "get_token",
    "import_tokens",
    "list_connections",
    "parse_introspect_flag",
    "queue_due_refreshes",
    "refresh_from_message",
    "start_connect_session",
]
