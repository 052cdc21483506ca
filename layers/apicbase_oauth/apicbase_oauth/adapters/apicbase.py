"""Adapter for Apicbase's OAuth endpoints: authorize URL, code exchange, refresh, introspection,
revocation; and who a fresh grant is for (the user's library, from its API's user_info).

Every way an answer can go wrong is classified here, once, into the exceptions of
``errors`` (the answers themselves are read in ``apicbase_answers``). Nothing here logs a token,
a code or a secret.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from ..errors import (
    ApicbaseRejected,
    ApicbaseUnavailable,
    InvalidClient,
    InvalidGrant,
    MalformedResponse,
    RateLimited,
)
from .apicbase_answers import (
    ClientCredentials,
    Introspection,
    TokenResponse,
    json_object,
    parse_token_response,
    retry_after_seconds,
)

__all__ = ["ApicbaseClient", "ClientCredentials", "Introspection", "TokenResponse", "parse_token_response"]
_ERROR_CODE_RE = re.compile(r"[a-z_]{1,64}")
# Under Apicbase's API URL: the token's user, and the library the token acts on.
USER_INFO_PATH = "api/v2/accounts/user_info/"
LIBRARY_NAME_MAX_LENGTH = 100


class ApicbaseClient:
    """One ``requests.Session`` per container; connection errors retried, nothing else."""

    def __init__(
        self,
        *,
        authorize_url: str,
        token_url: str,
        introspect_url: str,
        revoke_url: str | None = None,
        api_url: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        refresh_read_timeout: float = 25.0,
        session: requests.Session | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.now = now
        self.authorize_endpoint = authorize_url
        self.token_url = token_url
        self.introspect_url = introspect_url
        # RFC 7009. Apicbase does not document it; django-oauth-toolkit serves /oauth/revoke_token/.
        self.revoke_url = revoke_url or None
        self.user_info_url = api_url.rstrip("/") + "/" + USER_INFO_PATH if api_url else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # Generous: after a read timeout the refresh token may already be rotated.
        self.refresh_read_timeout = refresh_read_timeout
        self.session = session or requests.Session()
        # No proxies or .netrc from the environment (as the proxy route's client): a netrc entry
        # would add its own Authorization, and looking both up costs every call CPU.
        self.session.trust_env = False
        # Retry only errors raised before the request was sent: a retried refresh that had
        # reached Apicbase would present a revoked refresh token.
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.2)
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=32)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = "apicbase-oauth-broker"

    def worst_case_seconds(self, read_timeout: float) -> float:
        """The longest one request can take: every connect attempt the session's urllib3 ``Retry``
        allows (each up to the connect timeout, with its backoff between them), then the read."""
        retry: Retry = getattr(self.session.get_adapter(self.token_url), "max_retries", Retry(0))
        seconds = self.connect_timeout
        while True:
            try:
                retry = retry.increment("POST", self.token_url, error=ConnectTimeoutError("worst case"))
            except MaxRetryError:
                return seconds + read_timeout
            seconds += retry.get_backoff_time() + self.connect_timeout

    def authorize_url(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        scopes: tuple[str, ...],
        state: str,
        code_challenge: str | None = None,
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "scope": " ".join(scopes),
            "state": state,
            "redirect_uri": redirect_uri,
        }
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        separator = "&" if "?" in self.authorize_endpoint else "?"
        return f"{self.authorize_endpoint}{separator}{urlencode(params)}"

    def exchange_code(
        self,
        credentials: ClientCredentials,
        *,
        code: str,
        redirect_uri: str | None,
        code_verifier: str | None = None,
    ) -> TokenResponse:
        form = {"grant_type": "authorization_code", "code": code}
        if redirect_uri:
            form["redirect_uri"] = redirect_uri
        if code_verifier:
            form["code_verifier"] = code_verifier
        received_at, body = self._post(self.token_url, credentials, form, self.read_timeout)
        return parse_token_response(body, received_at)

    def refresh(self, credentials: ClientCredentials, *, refresh_token: str) -> TokenResponse:
        """Refresh; a response without ``refresh_token`` keeps the one presented (RFC 6749 6). A 2xx
        with no usable refresh token raises MalformedResponse, an unknown outcome (``request_sent``)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        received_at, body = self._post(self.token_url, credentials, form, self.refresh_read_timeout)
        tokens = parse_token_response(body, received_at)
        if tokens.refresh_token is None:
            tokens = replace(tokens, refresh_token=refresh_token)
        return tokens

    def introspect(
        self, credentials: ClientCredentials, *, token: str, read_timeout: float | None = None
    ) -> Introspection:
        timeout = self.read_timeout if read_timeout is None else read_timeout
        _, body = self._post(self.introspect_url, credentials, {"token": token}, timeout)
        if body is None or not isinstance(body.get("active"), bool):
            raise MalformedResponse("introspection response has no boolean active")
        if not body["active"]:
            return Introspection(active=False)

        def text(key: str) -> str | None:
            value = body.get(key)
            return value[:256] if isinstance(value, str) else None

        exp = body.get("exp")
        return Introspection(
            active=True,
            scope=text("scope"),
            exp=exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
            client_id=text("client_id"),
            username=text("username"),
        )

    def revoke(
        self,
        credentials: ClientCredentials,
        *,
        token: str,
        token_type_hint: str = "refresh_token",  # noqa: S107 (a type name)
    ) -> None:
        """Revoke a token (RFC 7009): returns when Apicbase answered 2xx, raises the layer's
        errors otherwise (``ApicbaseRejected`` with a 404 when the endpoint is missing).

        django-oauth-toolkit revokes a refresh token's access token with it.
        """
        if not self.revoke_url:
            raise ApicbaseRejected("no revocation endpoint is configured", code="revocation_not_configured")
        form = {"token": token, "token_type_hint": token_type_hint}
        self._post(self.revoke_url, credentials, form, self.read_timeout)

    def active_library(self, *, token: str, read_timeout: float) -> str | None:
        """The name of the library ``token`` acts on (the user's active library), as Apicbase's
        user_info names it (``active_library.name``; the sandbox answers so); None when it names
        none or refuses. One line of text, at most LIBRARY_NAME_MAX_LENGTH characters."""
        if not self.user_info_url:
            return None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            response = self.session.get(
                self.user_info_url, headers=headers, timeout=(self.connect_timeout, read_timeout), allow_redirects=False
            )
        except requests.exceptions.RequestException:
            raise ApicbaseUnavailable("Apicbase's user_info could not be read", request_sent=True) from None
        body = json_object(response) if response.status_code == 200 else None
        library = (body or {}).get("active_library")
        name = library.get("name") if isinstance(library, dict) else None
        if not isinstance(name, str):
            return None
        return " ".join("".join(c for c in name if c.isprintable()).split())[:LIBRARY_NAME_MAX_LENGTH] or None

    def _post(
        self,
        url: str,
        credentials: ClientCredentials,
        form: dict[str, str],
        read_timeout: float,
    ) -> tuple[float, dict[str, Any] | None]:
        data = {**form, "client_id": credentials.client_id, "client_secret": credentials.client_secret}
        try:
            response = self.session.post(
                url,
                data=data,
                headers={"Accept": "application/json"},
                timeout=(self.connect_timeout, read_timeout),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            raise ApicbaseUnavailable("Apicbase could not be reached", request_sent=False) from None
        except requests.exceptions.ReadTimeout:
            raise ApicbaseUnavailable("Apicbase did not answer in time", request_sent=True) from None
        except requests.exceptions.ConnectionError as exc:
            # A refused or unresolvable connection never sent anything; a reset after the
            # request was written leaves its outcome unknown.
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            sent = not isinstance(reason, (NewConnectionError, ConnectTimeoutError))
            raise ApicbaseUnavailable("the connection to Apicbase failed", request_sent=sent) from None
        except requests.exceptions.RequestException:
            raise ApicbaseUnavailable("the request to Apicbase failed", request_sent=True) from None
        received_at = self.now()
        return received_at, self._classify(response, received_at)

    @staticmethod
    def _classify(response: requests.Response, now: float) -> dict[str, Any] | None:
        status = response.status_code
        if 200 <= status < 300:
            return json_object(response)
        if status == 429:
            raise RateLimited(
                "Apicbase's rate limit was reached",
                retry_after=retry_after_seconds(response.headers.get("Retry-After"), now),
            )
        if status >= 500:
            raise ApicbaseUnavailable(f"Apicbase answered HTTP {status}", request_sent=True)
        body = json_object(response) or {}
        error = body.get("error")
        error = error if isinstance(error, str) and _ERROR_CODE_RE.fullmatch(error) else None
        if error == "invalid_grant":
            raise InvalidGrant("the authorization grant is invalid, expired, used or revoked")
        if error == "invalid_client" or status == 401:
            raise InvalidClient("Apicbase rejected the client id or secret")
        if 300 <= status < 400:
            raise ApicbaseRejected(f"Apicbase answered a redirect (HTTP {status}); check the endpoint URLs")
        raise ApicbaseRejected(
            f"Apicbase rejected the request: {error or f'HTTP {status}'}", code=error or "apicbase_rejected"
        )
