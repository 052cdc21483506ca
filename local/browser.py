"""A requests.Session that keeps the broker's cookies as a browser does on 127.0.0.1.

The broker's browser binder is a ``__Host-`` cookie, so it is always ``Secure``. Browsers treat
http://127.0.0.1 and http://localhost as secure contexts (Chrome and Firefox keep and send
Secure cookies there), which is how the local run works over plain http; Python's cookie jar
sends a Secure cookie over https only. This policy sends it to loopback hosts too, and nowhere
else, so the headless walks (``make demo``, the e2e tests) open connect_url like a browser.
"""

from __future__ import annotations

from http.cookiejar import Cookie, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.cookies import get_cookie_header

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TIMEOUT_SECONDS = 10


class LoopbackSecureCookies(DefaultCookiePolicy):
    def return_ok_secure(self, cookie: Cookie, request: Any) -> bool:
        if urlsplit(request.get_full_url()).hostname in LOOPBACK_HOSTS:
            return True
        return bool(super().return_ok_secure(cookie, request))


class _BrowserSession(requests.Session):
    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        # requests copies the session's cookies into a fresh jar with the default policy before
        # it writes the Cookie header, so the header is written again from the session's jar.
        prepared = super().prepare_request(request)
        header = get_cookie_header(self.cookies, prepared)
        if header:
            prepared.headers["Cookie"] = header
        return prepared


def browser_session() -> requests.Session:
    session = _BrowserSession()
    session.cookies.set_policy(LoopbackSecureCookies())
    return session


def open_connect_url(session: requests.Session, connect_url: str) -> str:
    """GET connect_url as a browser would: keep the binder cookie, return Apicbase's authorize URL."""
    response = session.get(connect_url, allow_redirects=False, timeout=TIMEOUT_SECONDS)
    if response.status_code != 302:
        raise RuntimeError(f"connect_url answered HTTP {response.status_code}, not a redirect to Apicbase")
    return str(response.headers["Location"])
