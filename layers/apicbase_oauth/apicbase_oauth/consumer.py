"""A valid Apicbase access token for your own Lambda functions that attach the broker's layer.

    from apicbase_oauth import get_access_token

    token = get_access_token("lib-42")
    # ... Apicbase answered 401 with that token (revoked or rotated meanwhile):
    token = get_access_token("lib-42", rejected_token=token)

It runs the admin API's own use case in your function (the same single-flight lease, so a
refresh here can never race the broker's), so your function needs the broker's environment
(TABLE_NAME, TOKEN_KEY_ID, CLIENT_SECRET_ID, the APICBASE_*_URL variables, EVENT_SOURCE) and
permissions: dynamodb:GetItem/UpdateItem on the table, kms:Encrypt/Decrypt on the token key,
secretsmanager:GetSecretValue on the secret, events:PutEvents on the default bus. Without
those, call the admin API's GET /connections/{id}/token instead.
"""

from __future__ import annotations

import threading

from . import usecases
from .config import Settings
from .deps import Deps, build
from .errors import RefreshInProgress
from .refresh import refresh_connection

_lock = threading.Lock()
_deps: Deps | None = None


def _get_deps() -> Deps:
    """Built on first use, once per container: importing the layer creates no AWS client."""
    global _deps  # noqa: PLW0603 (one per container, like the handlers' DEPS)
    with _lock:
        if _deps is None:
            _deps = build(Settings.from_env())
        return _deps


def get_access_token(connection_id: str, *, rejected_token: str | None = None) -> str:
    """The connection's access token, refreshed when it expires within TOKEN_LEEWAY_SECONDS.

    ``rejected_token``: a token Apicbase just answered 401 to. If the stored token is still
    that one, the connection is refreshed now; if another caller already replaced it, the
    newer token is returned without a second refresh. Raises the broker's errors
    (``NeedsReauthorization``, ``ConnectionNotFound``, ``RefreshInProgress``, ...).
    """
    deps = _get_deps()
    token = str(usecases.get_token(deps, connection_id)["access_token"])
    if rejected_token is None or token != rejected_token:
        return token
    try:
        result = refresh_connection(deps, connection_id, min_validity=0, force=True)
    except RefreshInProgress:
        return _wait_for_replacement(deps, connection_id, rejected_token)
    if result.tokens is not None:
        return result.tokens.access_token
    # Superseded or rotated elsewhere: the stored token is the newer one.
    return str(usecases.get_token(deps, connection_id)["access_token"])


def _wait_for_replacement(deps: Deps, connection_id: str, rejected_token: str) -> str:
    """Another caller holds the lease: its refresh replaces the token we are about to refresh."""
    waited, delay = 0.0, 0.2
    while waited < usecases.WAIT_FOR_REFRESH_SECONDS:
        deps.sleep(delay)
        waited += delay
        token = str(usecases.get_token(deps, connection_id)["access_token"])
        if token != rejected_token:
            return token
    raise RefreshInProgress(f"connection {connection_id} is being refreshed; try again in a few seconds", status=503)
