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

from . import validation
from .config import Settings
from .deps import Deps, build
from .tokens import get_token, replace_rejected_token

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
    connection_id = validation.connection_id(connection_id)
    if rejected_token is None:
        return get_token(deps, connection_id).access_token
    return replace_rejected_token(deps, connection_id, rejected_token).access_token
