"""Connect: a connect session, the callback that completes it, a pasted code, imported tokens.

Every path ends in ``_store_grant``: the grant sealed and saved before anything else is asked
of Apicbase, then announced on EventBridge.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from . import validation
from .adapters.apicbase import ClientCredentials, Introspection
from .adapters.events import CONNECTION_CREATED
from .custody import check_client, present, report_oddities, seal_and_save
from .deps import Deps
from .errors import (
    ApicbaseError,
    AuthorizationDenied,
    BrokerError,
    ConfigurationError,
    DependencyUnavailable,
    InvalidGrant,
    InvalidState,
    MalformedResponse,
)
from .model import REDIRECT_ERRORS, Connection, ConnectSession, StartedSession, TokenPair
from .observability import logger, metrics

_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


def start_connect_session(
    deps: Deps,
    connection_id: str,
    *,
    scopes: tuple[str, ...] | None = None,
    return_url: str | None = None,
    application: str = "default",
    request_domain: str | None = None,
) -> StartedSession:
    credentials = deps.credentials.get(application)
    redirect_uri = _redirect_uri(deps, request_domain)
    scopes = scopes or deps.settings.default_scopes
    state = secrets.token_urlsafe(32)
    verifier = challenge = None
    if deps.settings.pkce_enabled:
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    expires_at = int(deps.now()) + deps.settings.state_ttl_seconds
    deps.sessions.put(
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
    authorize_url = deps.apicbase.authorize_url(
        client_id=credentials.client_id, redirect_uri=redirect_uri, scopes=scopes, state=state, code_challenge=challenge
    )
    return StartedSession(connection_id, authorize_url, state, expires_at, redirect_uri, scopes)


def _redirect_uri(deps: Deps, request_domain: str | None) -> str:
    if deps.settings.callback_url:
        return deps.settings.callback_url
    if not request_domain or not _HOST_RE.fullmatch(request_domain):
        raise ConfigurationError("CALLBACK_URL is not set and the request has no usable domain name")
    return f"https://{request_domain}/oauth/callback"


@dataclass(frozen=True)
class CallbackOutcome:
    """What the callback page shows: the connection, or the error after the session was used.

    ``return_url`` and ``connection_id`` are the session's, so the integrator's page can take over.
    """

    connection_id: str
    return_url: str | None
    connection: Connection | None = None
    error: BrokerError | None = None


def complete_callback(deps: Deps, *, state: str | None, code: str | None, error: str | None) -> CallbackOutcome:
    """Consume the state, then (and only then) exchange the code and store the connection.

    Raises InvalidState before a session is known; after that, failures are in the outcome.
    """
    if not state or not validation.is_state(state):
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState("This sign-in link is not valid. Start connecting again from your application.")
    session = deps.sessions.consume(state)
    if session is None:
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState(
            "This sign-in link has expired or was already used. Start connecting again from your application."
        )
    try:
        if error is not None:
            reason = error if error in REDIRECT_ERRORS else "authorization_failed"
            logger.info("authorization not granted", connection_id=session.connection_id, error=reason)
            if reason == "access_denied":
                raise AuthorizationDenied("Access was not granted, so nothing was connected.")
            raise AuthorizationDenied(f"Apicbase did not authorize the request ({reason}).", code=reason)
        connection = _exchange_and_store(
            deps,
            connection_id=session.connection_id,
            application=session.application,
            expected_client_id=session.client_id,
            code=validation.authorization_code(code),
            redirect_uri=session.redirect_uri,
            code_verifier=session.code_verifier,
            source="callback",
        )
    except BrokerError as exc:
        return CallbackOutcome(session.connection_id, session.return_url, error=exc)
    return CallbackOutcome(session.connection_id, session.return_url, connection=connection)


def exchange_pasted_code(
    deps: Deps, connection_id: str, *, code: str, application: str = "default", redirect_uri: str | None = None
) -> Connection:
    """A code a person copied from Apicbase's page (no redirect URL configured)."""
    return _exchange_and_store(
        deps,
        connection_id=connection_id,
        application=application,
        expected_client_id=None,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=None,
        source="pasted_code",
    )


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
    if expected_client_id:
        check_client(credentials, expected_client_id, connection_id)
    # The code lives 60 seconds: exchange it before anything else.
    try:
        credentials, tokens = present(
            deps,
            credentials,
            deps.apicbase.exchange_code,
            connection_id=connection_id,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        )
    except InvalidGrant:
        metrics.add_metric(name="CodeRejected", unit="Count", value=1)
        raise InvalidGrant(
            "The authorization code has expired (codes live 60 seconds) or was already used. Start connecting again."
        ) from None
    if tokens.refresh_token is None:
        raise MalformedResponse("Apicbase's token response has no refresh_token; the connection cannot be kept alive")
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
    report_oddities(tokens, connection_id)
    introspection = _introspect_quietly(deps, credentials, tokens.access_token, connection_id)
    if introspection and introspection.active and (introspection.username or introspection.scope):
        connection = deps.store.record_identity(
            connection, username=introspection.username, scope=None if tokens.scope else introspection.scope
        )
    _announce_created(deps, connection)
    return connection


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
        connection = seal_and_save(
            deps,
            connection_id,
            pair,
            deps.store.save_tokens,
            connection_id=connection_id,
            application=credentials.application,
            client_id=credentials.client_id,
            expires_at=expires_at,
            scope=scope,
            username=username,
            source=source,
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


def import_tokens(
    deps: Deps,
    connection_id: str,
    *,
    access_token: str,
    refresh_token: str,
    expires_in: int | None = None,
    application: str = "default",
) -> Connection:
    """Tokens obtained elsewhere. Without expires_in, introspection tells the expiry."""
    credentials = deps.credentials.get(application)
    introspection = _introspect_quietly(deps, credentials, access_token, connection_id)
    active = introspection if introspection and introspection.active else None
    now = int(deps.now())
    if expires_in is not None:
        expires_at = now + expires_in
    elif active and active.exp:
        expires_at = active.exp
    else:
        expires_at = now  # unknown: due at once, the next refresh tells
    connection = _store_grant(
        deps,
        connection_id=connection_id,
        credentials=credentials,
        pair=TokenPair(access_token, refresh_token),
        expires_at=expires_at,
        scope=active.scope if active else None,
        username=active.username if active else None,
        source="import",
    )
    _announce_created(deps, connection)
    return connection
