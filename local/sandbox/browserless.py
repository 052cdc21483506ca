"""Walk the sandbox's login and consent pages with requests, as a person with a browser would."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

LOGIN_PATH = "/accounts/login/"
TIMEOUT_SECONDS = 10


class AuthorizeError(RuntimeError):
    """The sandbox did not get as far as redirecting to the client."""


class _FormFields(HTMLParser):
    """The named inputs of the first form on a page (hidden fields and CSRF token included)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._forms_seen = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self._forms_seen += 1
        elif tag == "input" and self._forms_seen == 1:
            attributes = dict(attrs)
            name = attributes.get("name")
            if name and attributes.get("type") not in ("submit", "button"):
                self.fields[name] = attributes.get("value") or ""


def _form_fields(html: str) -> dict[str, str]:
    parser = _FormFields()
    parser.feed(html)
    return parser.fields


def authorize_as(
    sandbox_url: str,
    authorize_url: str,
    username: str = "demo",
    password: str = "demo",  # noqa: S107 (the sandbox's demo user)
    allow: bool = True,
) -> str:
    """Log in to the sandbox, answer its consent page and return the redirect Location.

    The redirect (to the client's redirect URI, with ``code`` and ``state``, or with ``error``
    after Cancel, or for a bad request such as an unknown scope) is returned, not followed.
    Raises AuthorizeError if the login fails or the sandbox answers with an error page.
    """
    with requests.Session() as session:
        login_url = sandbox_url.rstrip("/") + LOGIN_PATH
        page = session.get(login_url, timeout=TIMEOUT_SECONDS)
        page.raise_for_status()
        fields = _form_fields(page.text)
        fields.update(username=username, password=password)
        login = session.post(login_url, data=fields, allow_redirects=False, timeout=TIMEOUT_SECONDS)
        if login.status_code != 302:
            raise AuthorizeError(f"login as {username!r} failed (HTTP {login.status_code})")

        consent = session.get(authorize_url, allow_redirects=False, timeout=TIMEOUT_SECONDS)
        if consent.status_code == 302:
            location = consent.headers["Location"]
            if urlsplit(urljoin(authorize_url, location)).path == LOGIN_PATH:
                raise AuthorizeError("the authorize URL asked for a login again: is its host the sandbox URL's?")
            return location
        if consent.status_code != 200:
            raise AuthorizeError(f"authorize request refused (HTTP {consent.status_code})")

        answer = _form_fields(consent.text)
        if allow:
            answer["allow"] = "Authorize"
        decision = session.post(authorize_url, data=answer, allow_redirects=False, timeout=TIMEOUT_SECONDS)
        if decision.status_code != 302:
            raise AuthorizeError(f"consent not accepted (HTTP {decision.status_code})")
        return decision.headers["Location"]
