"""Connect: the callback that completes a connect session, a pasted code, imported tokens.

The session and its browser are ``signin``'s; every path ends in ``grants.store_grant``.
"""

from __future__ import annotations

from .deps import Deps
from .errors import AuthorizationDenied, BrokerError, BrowserMismatch, InvalidRequest, InvalidState
from .grants import exchange_and_store, introspect_quietly, report_identity_change, store_grant
from .model import Connection, TokenPair, immutable
from .observability import logger, metrics

# The connect flow's entry points, where integrators and the handlers look for them.
from .signin import SignIn, begin_sign_in, same_browser, start_connect_session

__all__ = [
    "CallbackOutcome",
    "SignIn",
    "begin_sign_in",
    "complete_callback",
    "exchange_pasted_code",
    "import_tokens",
    "start_connect_session",
]


@immutable
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

    The edge hands over checked values: ``state`` and ``binder`` (the browser's binder cookie)
    shaped as we issue them, ``code`` an authorization code, ``error`` one of OAuth's codes or
    ``authorization_failed``; each None when absent or malformed. Raises
    InvalidState before a session is known, and BrowserMismatch (after consuming the session:
    it cannot be used again) when the binder is not the session's; after that, failures are in
    the outcome.
    """
    if state is None:
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState("This sign-in link is not valid. Start connecting again from your application.")
    session = deps.sessions.consume(state)
    if session is None:
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState(
            "This sign-in link has expired or was already used. Start connecting again from your application."
        )
    if not same_browser(session, binder):
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
            logger.info("authorization not granted", connection_id=session.connection_id, error=error)
            if error == "access_denied":
                raise AuthorizationDenied("Access was not granted, so nothing was connected.")
            raise AuthorizationDenied(f"Apicbase did not authorize the request ({error}).", code=error)
        if code is None:
            raise InvalidRequest("code must be the authorization code Apicbase showed", code="invalid_code")
        connection = exchange_and_store(
            deps,
            connection_id=session.connection_id,
            application=session.application,
            expected_client_id=session.client_id,
            code=code,
            redirect_uri=session.redirect_uri,
            code_verifier=session.code_verifier,
            source="callback",
            expected_username=session.expected_username,
        )
    except BrokerError as exc:
        return CallbackOutcome(session.connection_id, session.return_url, error=exc)
    report_identity_change(connection)
    return CallbackOutcome(session.connection_id, session.return_url, connection=connection)


def exchange_pasted_code(
    deps: Deps, connection_id: str, *, code: str, application: str = "default", redirect_uri: str | None = None
) -> Connection:
    """A code a person copied from Apicbase's page (no redirect URL configured)."""
    return exchange_and_store(
        deps,
        connection_id=connection_id,
        application=application,
        expected_client_id=None,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=None,
        source="pasted_code",
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
    introspection = introspect_quietly(deps, credentials, access_token, connection_id)
    active = introspection if introspection and introspection.active else None
    now = int(deps.now())
    if expires_in is not None:
        expires_at = now + expires_in
    elif active and active.exp:
        expires_at = active.exp
    else:
        expires_at = now  # unknown: due at once, the next refresh tells
    return store_grant(
        deps,
        deps.cipher.data_key(connection_id),
        credentials=credentials,
        pair=TokenPair(access_token, refresh_token),
        expires_at=expires_at,
        scope=active.scope if active else None,
        username=active.username if active else None,
        source="import",
    )
