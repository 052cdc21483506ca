"""A fake Apicbase token, introspection and revocation endpoint for ``responses``, as strict as
django-oauth-toolkit can be: each refresh revokes the refresh token presented and deletes its
access token at once; with reuse protection (on by default), a revoked refresh token presented
again revokes its whole family, the live pair included, and is counted in ``reuses`` (the
``apicbase`` fixture fails a test that presented one, unless the test says it models that); a
refresh token is revoked with its access token (RFC 7009). Counts every request; thread-safe, so
concurrent refreshers can be tested."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

AUTHORIZE_URL = "https://app.apicbase.test/oauth/authorize/"
TOKEN_URL = "https://api.apicbase.test/oauth/token/"
INTROSPECT_URL = "https://api.apicbase.test/oauth/introspect/"
REVOKE_URL = "https://api.apicbase.test/oauth/revoke_token/"
# Under the settings' API URL (Apicbase's own by default): who a token is for, and its library.
USER_INFO_URL = "https://api.apicbase.com/api/v2/accounts/user_info/"
CLIENT_ID = "client-default"
CLIENT_SECRET = "secret-default-0123456789"
APPLICATIONS = {"default": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}


@dataclass
class FakeApicbase:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    expires_in: int = 604800
    username: str = "chef@example.com"
    library: str = "Chef's kitchen"
    rotate: bool = True
    now: Callable[[], float] = time.time
    codes: dict[str, str] = field(default_factory=dict)  # code -> scope
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # live refresh token -> scope
    access_tokens: dict[str, float] = field(default_factory=dict)  # access token -> exp
    revoked: set[str] = field(default_factory=set)
    reuse_protection: bool = True
    rotated: set[str] = field(default_factory=set)  # refresh tokens revoked by a rotation
    reuses: int = 0  # rotated refresh tokens presented again
    reuse_expected: bool = False  # a test that models a second presentation says so
    lose_answers: int = 0  # the next token answers are processed, then lost to a read timeout
    introspection_down: bool = False
    family: dict[str, int] = field(default_factory=dict)  # token -> family (one per authorization)
    access_of: dict[str, str] = field(default_factory=dict)  # refresh token -> its access token
    token_requests: int = 0
    refresh_requests: int = 0
    introspections: int = 0
    revocations: int = 0
    user_infos: int = 0
    pairs: dict[str, str] = field(default_factory=dict)  # refresh token -> its access token
    issued_refresh_tokens: list[str] = field(default_factory=list)
    # Scripted answers for the next token requests: (status, body or text, headers)
    scripted: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    # Called with every form posted to the token and introspection endpoints (the hostile suite
    # registers each code and token presented as a secret).
    on_form: Callable[[dict[str, str]], None] | None = None
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_code(self, scope: str = "accounts library") -> str:
        code = f"code{next(self._counter):06d}"
        self.codes[code] = scope
        return code

    def issue_pair(self, scope: str = "accounts library") -> tuple[str, str]:
        """A pair as if obtained elsewhere (for imports and seeded connections)."""
        with self._lock:
            return self._pair(scope)

    def _pair(self, scope: str, family: int | None = None) -> tuple[str, str]:
        n = next(self._counter)
        return self.grant(f"access{n:06d}", f"refresh{n:06d}", scope, n if family is None else family)

    def grant(self, access: str, refresh: str, scope: str, family: int) -> tuple[str, str]:
        """A live pair with these tokens (``_pair``'s, or a stored item's from an earlier layout)."""
        self.access_tokens[access] = self.now() + self.expires_in
        self.refresh_tokens[refresh] = scope
        self.pairs[refresh] = access
        self.issued_refresh_tokens.append(refresh)
        self.family[access] = self.family[refresh] = family
        self.access_of[refresh] = access
        return access, refresh

    def _revoke_family(self, family: int) -> None:
        for token in [t for t, f in self.family.items() if f == family]:
            if self.refresh_tokens.pop(token, None) is not None:
                self.revoked.add(token)
            self.access_tokens.pop(token, None)

    def revoke_all(self) -> None:
        with self._lock:
            self.revoked.update(self.refresh_tokens)
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    def register(self, mock: responses.RequestsMock) -> None:
        self.mock = mock  # so a test that serves on 127.0.0.1 can let requests through to it
        mock.add_callback(responses.POST, TOKEN_URL, callback=self._token)
        mock.add_callback(responses.POST, INTROSPECT_URL, callback=self._introspect)
        mock.add_callback(responses.POST, REVOKE_URL, callback=self._revoke)
        mock.add_callback(responses.GET, USER_INFO_URL, callback=self._user_info)

    def _client_ok(self, form: dict[str, str]) -> bool:
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    def _form(self, request: Any) -> dict[str, str]:
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        if self.on_form:
            self.on_form(form)
        return form

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        form = self._form(request)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.token_requests += 1
            if form.get("grant_type") == "refresh_token":
                self.refresh_requests += 1
            if self.scripted:
                status, body, headers = self.scripted.pop(0)
                text = body if isinstance(body, str) else json.dumps(body)
                return status, headers, text
            if not self._client_ok(form):
                return 401, {}, json.dumps({"error": "invalid_client"})
            grant = form.get("grant_type")
            if grant == "authorization_code":
                scope = self.codes.pop(form.get("code", ""), None)
                if scope is None:
                    return 400, {}, json.dumps({"error": "invalid_grant"})
            elif grant == "refresh_token":
                presented = form.get("refresh_token", "")
                scope = self.refresh_tokens.get(presented)
                if scope is None:
                    if presented in self.rotated:
                        self.reuses += 1
                        if self.reuse_protection:
                            self._revoke_family(self.family[presented])
                    return 400, {}, json.dumps({"error": "invalid_grant"})
                if self.rotate:
                    del self.refresh_tokens[presented]
                    self.revoked.add(presented)
                    self.rotated.add(presented)
                    # django-oauth-toolkit deletes the old access token with the rotation.
                    self.access_tokens.pop(self.access_of.get(presented, ""), None)
            else:
                return 400, {}, json.dumps({"error": "unsupported_grant_type"})
            access, refresh = self._pair(scope, self.family.get(form.get("refresh_token", "")))
            if not self.rotate and grant == "refresh_token":
                del self.refresh_tokens[refresh]
                refresh = form["refresh_token"]
            body = {
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": self.expires_in,
                "token_type": "Bearer",
                "scope": scope,
            }
            if self.lose_answers:
                self.lose_answers -= 1
                raise requests.exceptions.ReadTimeout("the answer was lost after Apicbase rotated")
            return 200, {}, json.dumps(body)

    def _introspect(self, request: Any) -> tuple[int, dict[str, str], str]:
        form = self._form(request)
        with self._lock:
            self.introspections += 1
            if self.introspection_down:
                return 503, {}, "Service Unavailable"
            if not self._client_ok(form):
                return 401, {}, json.dumps({"error": "invalid_client"})
            exp = self.access_tokens.get(form.get("token", ""))
            if exp is None or exp < self.now():
                return 200, {}, json.dumps({"active": False})
            body = {
                "active": True,
                "scope": "accounts library",
                "exp": int(exp),
                "client_id": self.client_id,
                "username": self.username,
            }
            return 200, {}, json.dumps(body)

    def _user_info(self, request: Any) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.user_infos += 1
            exp = self.access_tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
            if exp is None or exp < self.now():
                return 401, {"WWW-Authenticate": "Bearer"}, json.dumps({"detail": "Invalid token."})
            body = {"username": self.username, "active_library": {"id": "lib-0001", "name": self.library}}
            return 200, {}, json.dumps(body)

    def _revoke(self, request: Any) -> tuple[int, dict[str, str], str]:
        """RFC 7009 as django-oauth-toolkit answers it: 200 for any token of this client (an
        unknown one included); a refresh token takes its access token with it."""
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        with self._lock:
            self.revocations += 1
            if not self._client_ok(form):
                return 401, {}, json.dumps({"error": "invalid_client"})
            token = form.get("token", "")
            if self.refresh_tokens.pop(token, None) is not None:
                self.revoked.add(token)
                self.access_tokens.pop(self.pairs.get(token, ""), None)
            else:
                self.access_tokens.pop(token, None)
            return 200, {}, ""

    @property
    def live_refresh_tokens(self) -> set[str]:
        return set(self.refresh_tokens)


@dataclass
class DataApi:
    """Apicbase's data API: answers only to a live access token (the fake's), echoes the request."""

    apicbase: FakeApicbase
    dead: set[str] = field(default_factory=set)  # deleted by a refresh elsewhere, as DOT does
    scripted: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    seen: list[Any] = field(default_factory=list)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.seen.append(request)
        if self.scripted:
            return self.scripted.pop(0)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.apicbase.access_tokens or token in self.dead:
            return 401, {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}, b'{"detail": "no"}'
        parts = urlsplit(request.url)
        body = request.body or b""
        echo = {
            "method": request.method,
            "path": parts.path,
            "query": parts.query,
            "body": body.decode() if isinstance(body, bytes) else body,
            "headers": sorted(name.lower() for name in request.headers),
        }
        return 200, {"Content-Type": "application/json", "ETag": '"v1"', "Set-Cookie": "a=b"}, json.dumps(echo).encode()
