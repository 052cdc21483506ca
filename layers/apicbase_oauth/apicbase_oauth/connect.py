"""Connect: a connect session, the callback that completes it, a pasted code, imported tokens.

Every path ends in ``_store_grant``: the grant sealed and saved before anything else is asked
of Apicbase, then announced on EventBridge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import validation
from .adapters.apicbase import ClientCredentials, Introspection, TokenResponse
from .adapters.events import CONNECTION_CREATED, IDENTITY_CHANGED
from .custody import check_client, present, report_oddities, seal_and_save
from .deps import Deps
from .errors import (
    ApicbaseError,
    AuthorizationDenied,
    BrokerError,
    BrowserMismatch,
    ConfigurationError,
    DependencyUnavailable,
    IdentityMismatch,
    IdentityUnverified,
    InvalidGrant,
    InvalidState,
    MalformedResponse,
)
from .model import REDIRECT_ERRORS, Connection, ConnectSession, StartedSession, TokenPair
from .observability import logger, metrics

# Issue 12: how long the identity check waits for introspection before it fails closed.
IDENTITY_READ_TIMEOUT = 5.0
_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


def start_connect_session(
    deps: Deps,
    connection_id: str,
    *,
    scopes: tuple[str, ...] | None = None,
    return_url: str | None = None,
    application: str = "default",
    request_domain: str | None = None,
    expected_username: str | None = None,
) -> StartedSession:
    credentials = deps.credentials.get(application)
    redirect_uri = _redirect_uri(deps, request_domain)
    scopes = scopes or deps.settings.default_scopes
    state = secrets.token_urlsafe(32)
    # The one-time id of connect_url (GET /oauth/start), which binds the flow to a browser.
    start_id = secrets.token_urlsafe(32)
    verifier = challenge = None
    if deps.settings.pkce_enabled:
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    expires_at = int(deps.now()) + deps.settings.state_ttl_seconds
    authorize_url = deps.apicbase.authorize_url(
        client_id=credentials.client_id, redirect_uri=redirect_uri, scopes=scopes, state=state, code_challenge=challenge
    )
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
            expected_username=expected_username,
        ),
        start_id=start_id,
        authorize_url=authorize_url,
    )
    logger.info("connect session started", connection_id=connection_id, application=application)
    return StartedSession(
        connection_id,
        authorize_url,
        state,
        expires_at,
        redirect_uri,
        scopes,
        connect_url=_start_url(redirect_uri, start_id),
        expected_username=expected_username,
    )


def _start_url(redirect_uri: str, start_id: str) -> str:
    """GET /oauth/start on the callback's own origin: the binder cookie is a host-only
    ``__Host-`` cookie, so the route that sets it must share the callback's host."""
    parts = urlsplit(redirect_uri)
    path = parts.path
    prefix = path[: -len("/oauth/callback")] if path.endswith("/oauth/callback") else ""
    return urlunsplit((parts.scheme, parts.netloc, f"{prefix}/oauth/start", urlencode({"session": start_id}), ""))


@dataclass(frozen=True)
class SignIn:
    """What GET /oauth/start answers: a redirect to Apicbase, and the binder for the cookie."""

    authorize_url: str
    binder: str
    max_age: int

    def __repr__(self) -> str:
        return f"SignIn(max_age={self.max_age})"


def begin_sign_in(deps: Deps, *, start_id: str | None) -> SignIn:
    """GET /oauth/start: consume the one-time start id, bind the session to a fresh binder
    (only its SHA-256 is stored), and hand back where to send the browser.

    Raises InvalidState for an unknown, used or expired start id.
    """
    if not start_id or not validation.is_state(start_id):
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState("This connect link is not valid. Start connecting again from your application.")
    pending = deps.sessions.take_start(start_id)
    binder = secrets.token_urlsafe(32)
    if pending is None or not deps.sessions.bind(pending.session_key, _binder_hash(binder)):
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState(
            "This connect link has expired or was already used. Start connecting again from your application."
        )
    return SignIn(pending.authorize_url, binder, max(pending.expires_at - int(deps.now()), 1))


def _binder_hash(binder: str) -> str:
    return hashlib.sha256(binder.encode()).hexdigest()


def _same_browser(session: ConnectSession, binder: str | None) -> bool:
    """The callback's binder cookie is the one GET /oauth/start set for this session."""
    if session.binder_hash is None or not binder or not validation.is_state(binder):
        return False
    return hmac.compare_digest(_binder_hash(binder), session.binder_hash)


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


def complete_callback(
    deps: Deps, *, state: str | None, code: str | None, error: str | None, binder: str | None
) -> CallbackOutcome:
    """Consume the state, check the browser, then (and only then) exchange the code and store
    the connection.

    ``binder`` is the value of the browser's binder cookie (None without one). Raises
    InvalidState before a session is known, and BrowserMismatch (after consuming the session:
    it cannot be used again) when the binder is not the session's; after that, failures are in
    the outcome.
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
    if not _same_browser(session, binder):
        # Login CSRF (RFC 9700 4.7.1): this browser did not open the session's connect_url. No
        # code exchange, and no hand-over to return_url: whoever is here did not start this.
        metrics.add_metric(name="CallbackBrowserMismatch", unit="Count", value=1)
        logger.warning("callback from another browser", connection_id=session.connection_id)
        raise BrowserMismatch(
            "This sign-in was started in another browser, so nothing was connected. "
            "Start connecting again from your application, in this browser."
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
            expected_username=session.expected_username,
        )
    except BrokerError as exc:
        return CallbackOutcome(session.connection_id, session.return_url, error=exc)
    _announce_identity_change(deps, connection)
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
    expected_username: str | None = None,
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
    # Issue 12 (identity): a grant for another user than expected is revoked, never stored.
    if expected_username is not None:
        _verify_identity(deps, credentials, tokens, expected_username, connection_id)
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


def _verify_identity(
    deps: Deps, credentials: ClientCredentials, tokens: TokenResponse, expected: str, connection_id: str
) -> None:
    """Issue 12: the session named who must sign in. Ask Apicbase who did before the grant is
    stored; another user, or no answer (fail closed), revokes the grant and stores nothing.

    This is the one path where a fresh refresh token is not stored before introspection: the
    grant is for the wrong identity, or an unverified one, so losing it is the intended outcome.
    """
    try:
        # Bounded: a matching grant is stored only after this answer (the code's 60 s are spent).
        introspection = deps.apicbase.introspect(
            credentials, token=tokens.access_token, read_timeout=IDENTITY_READ_TIMEOUT
        )
        username = introspection.username if introspection.active else None
    except ApicbaseError as exc:
        logger.warning("introspection failed", connection_id=connection_id, error=exc.code)
        username = None
    if username == expected:
        return
    assert tokens.refresh_token is not None
    revoked = _revoke_quietly(deps, credentials, tokens.refresh_token, connection_id)
    metrics.add_metric(name="IdentityMismatch", unit="Count", value=1)
    logger.warning(
        "grant refused: not the expected Apicbase user",
        connection_id=connection_id,
        verified=username is not None,
        revoked=revoked,
    )
    if username is None:
        raise IdentityUnverified(
            "Apicbase could not confirm who signed in, so nothing was connected.", request_sent=True
        )
    raise IdentityMismatch("You signed in to Apicbase as a different user than expected, so nothing was connected.")


def _revoke_quietly(deps: Deps, credentials: ClientCredentials, refresh_token: str, connection_id: str) -> bool:
    try:
        deps.apicbase.revoke(credentials, token=refresh_token)
    except ApicbaseError as exc:
        metrics.add_metric(name="RevocationFailed", unit="Count", value=1)
        logger.warning("revocation failed", connection_id=connection_id, error=exc.code)
        return False
    return True


def _announce_identity_change(deps: Deps, connection: Connection) -> None:
    """A reconnect signed in as another Apicbase user than the grant it replaced."""
    previous, current = connection.previous_username, connection.username
    if previous and current and previous != current:
        metrics.add_metric(name="ConnectionIdentityChanged", unit="Count", value=1)
        logger.warning("connection reconnected by another Apicbase user", connection_id=connection.connection_id)
        deps.events.publish(
            IDENTITY_CHANGED,
            {
                "connection_id": connection.connection_id,
                "application": connection.application,
                "previous_username": previous,
                "username": current,
                "source": connection.source,
            },
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
