"""A valid Apicbase access token for your own Lambda functions that attach the broker's layer.

    from apicbase_oauth import get_access_token

    token = get_access_token("lib-42")
    # ... Apicbase answered 401 with that token (revoked or rotated meanwhile):
    token = get_access_token("lib-42", rejected_token=token)

A thin wrapper over the client library ``apicbase_broker`` (the layer ships it beside this
package, from the same source as the pip distribution): ``BrokerClient.token``, signed with SigV4
(service ``execute-api``) with your function's own role, the token cached in the container until
60 s before it expires. ``GET /connections/{id}/token``, and after a 401 ``POST
/connections/{id}/token`` ``{"rejected_token": ...}`` (the broker refreshes only if it still holds
that token, so however many functions report it, Apicbase sees one refresh; the token travels in
the body, never in a URL). Its errors are the client's: ``NeedsReauthorization``,
``ConnectionNotFound``, ``Busy`` (``retry_after``) and its ``RateLimited``, ``ConfigurationError``,
all ``apicbase_broker.BrokerError``.

Environment: ``APICBASE_BROKER_API_URL`` (``BROKER_API_URL``, its older name, also works), the
stack's ``ApiUrl`` output (``http://127.0.0.1:3000`` for the local run, which is called unsigned).
The region is the URL's, or the function's own.

IAM: the function's role needs this and nothing else (no table, no key, no secret)::

    {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": [
      "arn:aws:execute-api:REGION:ACCOUNT:API_ID/*/GET/connections/*/token",
      "arn:aws:execute-api:REGION:ACCOUNT:API_ID/*/POST/connections/*/token"]}

(``connections/*`` may name your connection ids instead.) To call Apicbase without holding a
token at all, use the proxy route (``apicbase_broker.BrokerClient(...).apicbase(id)``).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apicbase_broker import BrokerClient

_lock = threading.Lock()
_client: BrokerClient | None = None


def _get_client() -> BrokerClient:
    """Built on first use, once per container: importing the layer creates nothing (and loads
    neither the client nor botocore)."""
    global _client  # noqa: PLW0603 (one per container)
    with _lock:
        if _client is None:
            import botocore.session  # noqa: PLC0415

            from apicbase_broker import BrokerClient  # noqa: PLC0415

            session = botocore.session.get_session()
            # The client's variable first, then the name this helper read before it wrapped the client.
            api_url = os.environ.get("APICBASE_BROKER_API_URL", "") or os.environ.get("BROKER_API_URL", "")
            _client = BrokerClient.from_env(
                api_url=api_url.strip(),
                credentials=session.get_credentials(),
                region=session.get_config_variable("region"),
            )
        return _client


def get_access_token(connection_id: str, *, rejected_token: str | None = None) -> str:
    """The connection's access token, from the broker (refreshed there when it expires soon).

    ``rejected_token``: a token Apicbase just answered 401 to. If the broker still holds that
    one, it refreshes the connection now; if another caller already had it replaced, the newer
    token is returned without a second refresh.
    """
    return _get_client().token(connection_id, rejected=rejected_token)
