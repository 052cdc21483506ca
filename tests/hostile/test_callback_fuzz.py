"""The public callback under arbitrary query strings, through the real handler."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from apicbase_oauth.edge import pages
from tests.binding import open_in_browser
from tests.hostile.conftest import FIGURES, connection_items, http_event
from tests.hostile.strategies import ATTACKS, examples, hostile_text

REAL_STATE = "<the state of a real session>"
RETURN_URL = "https://integrator.example.com/done?x=1"
RETURN_PARAMS = {"x", "connection_id", "status", "error"}

keys = st.one_of(
    st.sampled_from(["code", "state", "error", "error_description", "scope", "connection_id"]), st.text(max_size=12)
)
queries = st.lists(st.tuples(keys, st.one_of(hostile_text, st.just(REAL_STATE))), max_size=6)


class _Markup(HTMLParser):
    def __init__(self, body: str) -> None:
        super().__init__()
        self.tags: set[tuple[str, tuple[tuple[str, str | None], ...]]] = set()
        self.feed(body)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add((tag, tuple(attrs)))


REFERENCE_PAGE = pages.render(400, "title", "message", "hint")[2]
REFERENCE_TAGS = _Markup(REFERENCE_PAGE).tags


def _reflected_unescaped(value: str, body: str) -> bool:
    """A value with markup characters found verbatim in the page (and not as the page's own markup)."""
    risky = any(c in value for c in "<>\"'") and len(value) >= 4
    return risky and value in body and value not in REFERENCE_PAGE


@pytest.fixture
def callback(handlers):
    return handlers.module("CallbackFunction")


@examples(150)
@given(query=queries, with_return_url=st.booleans(), with_cookie=st.booleans())
# Always: a real state with a made-up code, which Apicbase refuses (invalid_grant): the page and the
# logs of that failure must not carry the code.
@example(query=[("code", "made-up-code-3Rk7wq"), ("state", REAL_STATE)], with_return_url=False, with_cookie=True)
@example(query=[("state", REAL_STATE), ("code", "made-up-code-8Jd2mv")], with_return_url=True, with_cookie=True)
def test_callback_survives_any_query_string(callback, handlers, apicbase, watch, query, with_return_url, with_cookie):
    """Given any query string (missing, repeated, huge, non-UTF-8, unicode, script tags, code and error
    together), some carrying the state of a real session, from the browser that opened its
    connect_url or from another one (no binder cookie),
    when the callback handles it,
    then it answers below 500 with our security headers, asks Apicbase for a token only with a
    valid state and its browser's cookie, stores no connection, and reflects no input unescaped."""
    FIGURES["callback: query strings tried"] += 1
    module = callback
    before = apicbase.token_requests
    if any(value == REAL_STATE for _, value in query):
        return_url = RETURN_URL if with_return_url else None
        state, binder = open_in_browser(module.DEPS, "lib-fuzz", return_url=return_url)
        cookies = [f"{pages.BINDER_COOKIE}={binder}"] if with_cookie else None
        query = [(key, state if value == REAL_STATE else value) for key, value in query]
        valid_state = [value for key, value in query if key == "state"] == [state] and with_cookie
    else:
        valid_state, cookies = False, None
    register_codes_and_states(watch, query)

    response = handlers.invoke(module, http_event("GET", "/oauth/callback", query=query, cookies=cookies))
    page = response["body"]
    watch.see(page, response["headers"].get("Location"))

    assert response["statusCode"] < 500
    assert response["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert response["headers"]["Cache-Control"] == "no-store"
    assert valid_state or apicbase.token_requests == before
    assert connection_items(module.DEPS.connections.table) == []
    _assert_nothing_reflected(response, query)


def register_codes_and_states(watch, query: list[tuple[str, str]]) -> None:
    """Every code and state sent is a secret: the callback must not show or log the code it got
    (Apicbase may still accept it) nor a state (forged or not)."""
    watch.secret_input(*(value for key, value in query if key in ("code", "state")))


def _assert_nothing_reflected(response: dict[str, Any], query: list[tuple[str, str]]) -> None:
    page = response["body"]
    assert "<script" not in page.lower()
    assert _Markup(page).tags <= REFERENCE_TAGS
    assert not [value for pair in query for value in pair if _reflected_unescaped(value, page)]
    location = response["headers"].get("Location")
    if location:
        assert location.startswith(RETURN_URL)
        params = dict(parse_qsl(urlsplit(location).query))
        assert set(params) <= RETURN_PARAMS
        assert params["connection_id"] == "lib-fuzz"


def test_attack_strings_are_known_to_the_reflection_check():
    """Given the attack strings the fuzzer mixes in, then the reflection check would catch each one
    verbatim in a page (so the property above cannot pass by never looking)."""
    markup = [a for a in ATTACKS if any(c in a for c in "<>\"'")]
    assert markup
    assert all(_reflected_unescaped(a, f"<p>{a}</p>") for a in markup)
