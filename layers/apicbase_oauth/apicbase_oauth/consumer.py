"""A valid Apicbase access token for your own Lambda functions that attach the broker's layer.

    from apicbase_oauth import get_access_token

    token = get_access_token("lib-42")
    # ... Apicbase answered 401 with that token (revoked or rotated meanwhile):
    token = get_access_token("lib-42", rejected_token=token)

A thin client of the broker's API, signed with SigV4 (service ``execute-api``) with your
function's own role: ``GET /connections/{id}/token``, and ``POST /connections/{id}/token``
``{"rejected_token": ...}`` after a 401 (the broker refreshes only if it still holds that token,
so however many functions report it, Apicbase sees one refresh; the token travels in the body,
never in a URL).

Environment: ``BROKER_API_URL``, the stack's ``ApiUrl`` output (``http://127.0.0.1:3000`` for
the local run, which is called unsigned). The region is the URL's, or the function's own.

IAM: the function's role needs this and nothing else (no table, no key, no secret)::

    {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": [
      "arn:aws:execute-api:REGION:ACCOUNT:API_ID/*/GET/connections/*/token",
      "arn:aws:execute-api:REGION:ACCOUNT:API_ID/*/POST/connections/*/token"]}

(``connections/*`` may name your connection ids instead.) To call Apicbase without holding a
token at all, use the proxy route (``apicbase_broker.BrokerClient(...).apicbase(id)``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from . import errors, validation

TIMEOUT_SECONDS = (3.0, 35.0)  # API Gateway gives the broker's function 30 s
SERVICE = "execute-api"
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The broker's error codes a caller may want to tell apart, as the layer's own exceptions.
_ERRORS: dict[str, type[errors.BrokerError]] = {
    "connection_not_found": errors.ConnectionNotFound,
    "needs_reauthorization": errors.NeedsReauthorization,
    "refresh_in_progress": errors.RefreshInProgress,
}

_lock = threading.Lock()
_client: BrokerApi | None = None


class BrokerApi:
    """The two token routes of the broker's API at ``api_url``, signed with ``credentials``."""

    def __init__(self, api_url: str, *, credentials: Any, region: str | None, session: Any = None) -> None:
        import requests  # noqa: PLC0415 (importing the layer stays cheap)

        parts = urlsplit(api_url)
        self.local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
        if not parts.hostname or (parts.scheme != "https" and not self.local):
            raise errors.ConfigurationError("BROKER_API_URL must be the broker's https ApiUrl (http only on 127.0.0.1)")
        self.api_url = api_url.rstrip("/")
        found = _REGION_IN_HOST.search(parts.hostname)
        self.region = found.group(1) if found else region
        if not self.local and (credentials is None or not self.region):
            raise errors.ConfigurationError("no AWS credentials or region to sign the broker's API calls with")
        self.credentials = credentials
        self.http = session or requests.Session()
        self.http.trust_env = False  # no .netrc: it would replace the signature

    def token(self, connection_id: str, rejected_token: str | None = None) -> str:
        path = f"/connections/{quote(connection_id, safe='')}/token"
        if rejected_token is None:
            answer = self._call("GET", path, None)
        else:
            answer = self._call("POST", path, json.dumps({"rejected_token": rejected_token}).encode())
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise errors.BrokerError("the broker's token answer has no access_token", code="malformed_response")
        return token

    def _call(self, method: str, path: str, body: bytes | None) -> Any:
        import requests  # noqa: PLC0415

        url = self.api_url + path
        headers = {"Accept": "application/json", **({"Content-Type": "application/json"} if body else {})}
        if not self.local:
            headers = self._sign(method, url, body, headers)
        try:
            answer = self.http.request(method, url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise errors.DependencyUnavailable(
                f"the broker's API could not be reached ({type(exc).__name__})"
            ) from None
        try:
            document = answer.json() if answer.content else None
        except ValueError:
            document = None
        if answer.status_code >= 400:
            raise _error(answer.status_code, document)
        return document

    def _sign(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth  # noqa: PLC0415
        from botocore.awsrequest import AWSRequest  # noqa: PLC0415

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(self.credentials.get_frozen_credentials(), SERVICE, str(self.region)).add_auth(request)
        return dict(request.headers.items())


def _error(status: int, document: Any) -> errors.BrokerError:
    """The broker's ``{"error": {"code", "message"}}`` as the layer's exception (never the body
    itself in a message: a token could be in it)."""
    error = document.get("error") if isinstance(document, dict) else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if not code:
        # API Gateway's own answer: {"message": "Forbidden"} for a missing execute-api:Invoke.
        text = str(document.get("message", "")) if isinstance(document, dict) else ""
        code, message = "broker_refused", f"the broker's API answered {status} {text[:100]}".strip()
    cls = _ERRORS.get(code)
    if cls is not None:
        return cls(message)
    if status == 503:
        return errors.DependencyUnavailable(message or "the broker is busy; retry shortly")
    return errors.BrokerError(message or f"the broker's API answered {status}", code=code)


def _get_client() -> BrokerApi:
    """Built on first use, once per container: importing the layer creates nothing."""
    global _client  # noqa: PLW0603 (one per container)
    with _lock:
        if _client is None:
            import botocore.session  # noqa: PLC0415

            api_url = os.environ.get("BROKER_API_URL", "").strip()
            if not api_url:
                raise errors.ConfigurationError("BROKER_API_URL is not set: the broker stack's ApiUrl output")
            session = botocore.session.get_session()
            _client = BrokerApi(
                api_url, credentials=session.get_credentials(), region=session.get_config_variable("region")
            )
        return _client


def get_access_token(connection_id: str, *, rejected_token: str | None = None) -> str:
    """The connection's access token, from the broker (refreshed there when it expires soon).

    ``rejected_token``: a token Apicbase just answered 401 to. If the broker still holds that
    one, it refreshes the connection now; if another caller already had it replaced, the newer
    token is returned without a second refresh. Raises the layer's errors
    (``NeedsReauthorization``, ``ConnectionNotFound``, ``RefreshInProgress``,
    ``DependencyUnavailable``, ``ConfigurationError``, or ``BrokerError`` with the broker's code).
    """
    connection_id = validation.connection_id(connection_id)
    if rejected_token is not None:
        rejected_token = validation.token(rejected_token, "rejected_token")
    return _get_client().token(connection_id, rejected_token)
