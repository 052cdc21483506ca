"""Connect, first half: the connect session an integrator starts, and the browser that opens its
connect_url (``GET /oauth/start``), bound to the session by a cookie's binder (RFC 9700 §4.7.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlencode, urlsplit, urlunsplit

from .adapters.dynamodb import state_key
from .adapters.sessions import session_tag
from .deps import Deps
from .errors import InvalidState
from .model import ConnectSession, StartedSession, immutable
from .observability import logger, metrics


def start_connect_session(
    deps: Deps,
    connection_id: str,
    *,
    redirect_uri: str,
    scopes: tuple[str, ...] | None = None,
    return_url: str | None = None,
    application: str = "default",
    expected_username: str | None = None,
) -> StartedSession:
    credentials = deps.credentials.get(application)
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


@immutable
class SignIn:
    """What GET /oauth/start answers: a redirect to Apicbase, and the binder for the cookie."""

    authorize_url: str
    binder: str
    max_age: int
    tag: str = ""  # the session's (``session_tag``): its cookie is named with it

    def __repr__(self) -> str:
        return f"SignIn(max_age={self.max_age})"


def begin_sign_in(deps: Deps, *, start_id: str | None) -> SignIn:
    """GET /oauth/start: consume the one-time start id, bind the session to a fresh binder
    (only its SHA-256 is stored), and hand back where to send the browser.

    ``start_id`` is None when absent or not shaped as we issue them. Raises InvalidState for an
    unknown, used or expired start id.
    """
    if start_id is None:
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState("This connect link is not valid. Start connecting again from your application.")
    pending = deps.sessions.take_start(start_id)
    binder = secrets.token_urlsafe(32)
    if pending is None or not deps.sessions.bind(pending.session_key, _binder_hash(binder)):
        metrics.add_metric(name="CallbackInvalidState", unit="Count", value=1)
        raise InvalidState(
            "This connect link has expired or was already used. Start connecting again from your application."
        )
    return SignIn(pending.authorize_url, binder, max(pending.expires_at - int(deps.now()), 1), pending.tag)


def binder_tag(state: str) -> str:
    """The tag of the session a callback's state names: which binder cookie is its. The state is
    checked at the edge first (``checks.issued``): what is not one may not even be text."""
    return session_tag(state_key(state))


def _binder_hash(binder: str) -> str:
    return hashlib.sha256(binder.encode()).hexdigest()


def same_browser(session: ConnectSession, binder: str | None) -> bool:
    """The callback's binder cookie (None when absent or malformed) is the one GET /oauth/start
    set for this session."""
    if session.binder_hash is None or binder is None:
        return False
    return hmac.compare_digest(_binder_hash(binder), session.binder_hash)
