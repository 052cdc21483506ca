"""Storing a grant Apicbase issued (a code exchanged, tokens imported): the key to seal it taken
first, the code presented once (``custody``), the identity checked when one is expected, the grant
sealed and saved before anything else is asked of Apicbase. The table's stream announces it
(``announce``): nothing here puts an event.
"""

from __future__ import annotations

from .adapters.apicbase import ClientCredentials, Introspection, TokenResponse
from .adapters.crypto import DataKey
from .custody import check_client, present, report_oddities, require_time, revoke_quietly, save_or_park, time_needed
from .deps import Deps
from .errors import (
    ApicbaseError,
    DependencyUnavailable,
    IdentityMismatch,
    IdentityUnverified,
    InvalidGrant,
    MalformedResponse,
    TokensParked,
)
from .model import Connection, Grant, Rescue, TokenPair, new_generation
from .observability import logger, metrics

# How long the identity check waits for introspection before it fails closed.
IDENTITY_READ_TIMEOUT = 5.0
# How long the callback's page waits for the library's name (nice to have).
LIBRARY_READ_TIMEOUT = 3.0


def exchange_and_store(
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
    # The key to seal the grant with is in hand before the code is presented; then the code,
    # which lives 60 seconds, is exchanged before anything else.
    key = deps.cipher.data_key(connection_id)
    # Nothing is presented without the time to store its answer (and to check who signed in).
    needed = time_needed(deps, deps.apicbase.read_timeout)
    if expected_username is not None:
        needed += deps.apicbase.worst_case_seconds(IDENTITY_READ_TIMEOUT)
    require_time(deps, needed)
    try:
        credentials, tokens = present(
            deps,
            credentials,
            deps.apicbase.exchange_code,
            connection_id=connection_id,
            needed=needed,
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
    # A grant for another user than expected is revoked, never stored; the introspection that
    # named the expected user also gives the grant its username.
    identity = None
    if expected_username is not None:
        identity = _verify_identity(deps, credentials, tokens, expected_username, connection_id)
    # Otherwise store the grant before asking who the user is: a slow introspection must not be able
    # to outlast the function's timeout while the only copy of a fresh refresh token is in memory.
    # A user verified above is known already: the stored grant (and its Created event) name them.
    connection = store_grant(
        deps,
        key,
        credentials=credentials,
        pair=TokenPair(tokens.access_token, tokens.refresh_token),
        expires_at=tokens.expires_at,
        scope=_scope(tokens, identity),
        username=identity.username if identity else None,
        source=source,
    )
    report_oddities(tokens, connection_id)
    if identity is None:
        introspection = introspect_quietly(deps, credentials, tokens.access_token, connection_id)
        identity = introspection if introspection and introspection.active else None
        username = identity.username if identity else None
        scope = identity.scope if identity and not tokens.scope else None
    else:
        username = scope = None  # the identity check's answer is stored with the grant
    library = library_quietly(deps, tokens.access_token, connection_id)
    if username or scope or library:
        connection = deps.connections.record_identity(connection, username=username, scope=scope, library=library)
    return connection


def _scope(tokens: TokenResponse, identity: Introspection | None) -> str | None:
    """The token response's scope; introspection's when the response names none."""
    if tokens.scope or identity is None or identity.scope is None:
        return tokens.scope
    return identity.scope


def _verify_identity(
    deps: Deps, credentials: ClientCredentials, tokens: TokenResponse, expected: str, connection_id: str
) -> Introspection:
    """The session named who must sign in. Ask Apicbase who did before the grant is
    stored; another user, or no answer (fail closed), revokes the grant and stores nothing.
    Returns the introspection that named the expected user.

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
        return introspection
    assert tokens.refresh_token is not None
    revoked = revoke_quietly(deps, connection_id, credentials.application, tokens.refresh_token) is None
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


def report_identity_change(connection: Connection) -> None:
    """A reconnect signed in as another Apicbase user than the grant it replaced (the stream
    announces it as Identity Changed)."""
    previous, current = connection.previous_username, connection.username
    if previous and current and previous != current:
        metrics.add_metric(name="ConnectionIdentityChanged", unit="Count", value=1)
        logger.warning("connection reconnected by another Apicbase user", connection_id=connection.connection_id)


def introspect_quietly(
    deps: Deps, credentials: ClientCredentials, access_token: str, connection_id: str
) -> Introspection | None:
    """The username is nice to have: a failed introspection does not fail a connect."""
    try:
        return deps.apicbase.introspect(credentials, token=access_token)
    except ApicbaseError as exc:
        logger.warning("introspection failed", connection_id=connection_id, error=exc.code)
        return None


def library_quietly(deps: Deps, access_token: str, connection_id: str) -> str | None:
    """The library's name is nice to have (the callback's page names it): failing to read it does
    not fail a connect."""
    try:
        return deps.apicbase.active_library(token=access_token, read_timeout=LIBRARY_READ_TIMEOUT)
    except ApicbaseError as exc:
        logger.warning("library not read", connection_id=connection_id, error=exc.code)
        return None


def store_grant(
    deps: Deps,
    key: DataKey,
    *,
    credentials: ClientCredentials,
    pair: TokenPair,
    expires_at: int,
    scope: str | None,
    username: str | None,
    source: str,
) -> Connection:
    connection_id = key.connection_id
    grant = Grant(
        connection_id=connection_id,
        application=credentials.application,
        client_id=credentials.client_id,
        tokens=deps.cipher.seal(key, pair),
        expires_at=expires_at,
        scope=scope,
        username=username,
        source=source,
        generation=new_generation(),  # every grant stored is a new generation of its connection
    )
    rescue = Rescue.of_grant(grant, parked_at=int(deps.now()))
    try:
        connection = save_or_park(deps, lambda: deps.connections.save_grant(grant), rescue)
    except TokensParked:
        raise
    except DependencyUnavailable:
        logger.error("tokens were issued but could not be stored", connection_id=connection_id)
        raise
    metrics.add_metric(name="ConnectionCreated", unit="Count", value=1)
    logger.info("connection stored", connection_id=connection_id, source=source, version=connection.version)
    return connection
