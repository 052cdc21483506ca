"""Browser binding, through the public function's real handler: connect_url binds a flow to the browser
that opens it (login CSRF, RFC 9700 4.7.1), and a session's expected_username keeps another
Apicbase user's library out of the connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from apicbase_oauth import connect, signin
from apicbase_oauth.adapters.dynamodb import connection_key, state_key
from apicbase_oauth.edge import pages
from apicbase_oauth.errors import ApicbaseUnavailable
from apicbase_oauth.signin import binder_tag
from tests.binding import start_id_of, state_of
from tests.conftest import load_event
from tests.unit.logcapture import captured_logs

CID = "lib-42"
RETURN_URL = "https://integrator.example.com/apicbase/done"
COOKIE_ATTRIBUTES = ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"]

Public = Callable[..., dict[str, Any]]


@pytest.fixture
def public(load_handler, deps, lambda_context) -> Public:
    """GET a public route of the callback function, as API Gateway sends it, with the browser's
    cookies ("name=value" strings)."""
    module = load_handler("CallbackFunction")
    module.DEPS = deps

    def get(path: str, params: dict[str, str], *, cookies: list[str] | None = None) -> dict[str, Any]:
        event = load_event("callback.json")
        event.update(routeKey=f"GET {path}", rawPath=path, rawQueryString=urlencode(params))
        event["queryStringParameters"] = params or None
        event["requestContext"].update(routeKey=f"GET {path}")
        event["requestContext"]["http"]["path"] = path
        if cookies:
            event["cookies"] = cookies
        return module.lambda_handler(event, lambda_context)

    return get


class Browser:
    """A person's browser: keeps the cookies the broker sets, as a browser would."""

    def __init__(self, public: Public) -> None:
        self.public = public
        self.jar: dict[str, str] = {}

    def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = self.public(path, params, cookies=[f"{k}={v}" for k, v in self.jar.items()])
        for cookie in response.get("cookies", []):
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        return response

    def open(self, connect_url: str) -> dict[str, Any]:
        return self.get("/oauth/start", {"session": start_id_of(connect_url)})


@pytest.fixture
def browser(public) -> Browser:
    return Browser(public)


def session(deps, **fields: Any) -> Any:
    fields.setdefault("redirect_uri", deps.settings.callback_url)
    return connect.start_connect_session(deps, CID, **fields)


def stored(deps) -> dict[str, Any] | None:
    return deps.connections.table.get_item(Key={"pk": connection_key(CID)}).get("Item")


# --- connect_url -----------------------------------------------------------------------------------
def test_connect_url_sets_a_host_only_cookie_and_redirects_to_apicbase(deps, browser) -> None:
    """Given a connect session, when a browser opens its connect_url, then it is redirected to
    Apicbase's authorize URL with the session's state, and gets a __Host- binder cookie
    (Secure, HttpOnly, SameSite=Lax, Path=/) that lives as long as the session."""
    started = session(deps)

    response = browser.open(started.connect_url)

    [cookie] = response["cookies"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert response["statusCode"] == 302
    assert state_of(response["headers"]["Location"]) == started.state
    assert response["headers"]["Cache-Control"] == "no-store"
    name = pages.binder_cookie_name(binder_tag(started.state))
    assert attributes[0].startswith(name + "=") and name.startswith("__Host-apicbase-connect-")
    assert attributes[1:5] == COOKIE_ATTRIBUTES and "Domain" not in cookie
    assert attributes[5] == f"Max-Age={deps.settings.state_ttl_seconds}"


def test_connect_url_works_once(deps, browser, public) -> None:
    """Given a connect_url a browser opened, when it is opened again (in any browser), then a
    400 page says the link was used, and no cookie is set."""
    started = session(deps)
    browser.open(started.connect_url)

    again = public("/oauth/start", {"session": start_id_of(started.connect_url)})

    assert again["statusCode"] == 400 and "cookies" not in again
    assert "already used" in again["body"]


def test_an_expired_or_forged_connect_url_is_refused(deps, public, clock) -> None:
    """Given a connect_url past the session's lifetime, or a start id never issued, then a 400
    page, and no cookie."""
    started = session(deps)
    clock.advance(deps.settings.state_ttl_seconds)

    for params in ({"session": start_id_of(started.connect_url)}, {"session": "A" * 43}, {"session": "x\n"}, {}):
        response = public("/oauth/start", params)

        assert response["statusCode"] == 400 and "cookies" not in response


# --- the callback needs the cookie -------------------------------------------------------------------
def test_the_browser_that_opened_connect_url_completes_the_callback(deps, apicbase, browser) -> None:
    """Given a browser that opened connect_url, when Apicbase sends it back with a code, then
    the connection is stored, and the answer clears the binder cookie."""
    started = session(deps)
    browser.open(started.connect_url)

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 200
    assert stored(deps) is not None
    name = pages.binder_cookie_name(binder_tag(started.state))
    assert response["cookies"][0] == f"{name}=; {'; '.join(COOKIE_ATTRIBUTES)}; Max-Age=0"
    assert browser.jar == {}


def test_several_connect_links_opened_in_one_browser_each_complete(deps, apicbase, browser, public) -> None:
    """Given two connect sessions (two connections) whose connect_urls one browser opened, one
    after the other, when Apicbase sends that browser back for each, in either order, then each
    callback completes with its own binder cookie, and clears only its own."""
    first, second = (
        session(deps),
        connect.start_connect_session(deps, "lib-43", redirect_uri=deps.settings.callback_url),
    )
    browser.open(first.connect_url)
    browser.open(second.connect_url)
    assert len(browser.jar) == 2

    assert browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": second.state})["statusCode"] == 200
    assert len(browser.jar) == 1
    assert browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": first.state})["statusCode"] == 200

    assert deps.connections.get(CID) and deps.connections.get("lib-43") and browser.jar == {}
    # And each is still bound to its browser: the other cookie in another browser does not do
    third = session(deps)
    browser.open(third.connect_url)
    other_cookie = [f"{pages.binder_cookie_name(binder_tag(first.state))}={value}" for value in browser.jar.values()]
    refused = public("/oauth/callback", {"code": apicbase.issue_code(), "state": first.state}, cookies=other_cookie)
    assert refused["statusCode"] == 400


def test_a_session_is_bound_to_one_browser_once(deps) -> None:
    """Given a session bound to a browser's binder, when another binder is offered for it (a
    start item replayed), then it is refused and the first binder stays the session's."""
    started = session(deps)
    key = state_key(started.state)
    assert deps.sessions.bind(key, "a" * 64)

    assert not deps.sessions.bind(key, "b" * 64)
    assert deps.sessions.consume(started.state).binder_hash == "a" * 64


def test_login_csrf_a_state_forwarded_to_another_browser_is_refused(deps, apicbase, public, browser) -> None:
    """Given an attacker who opened his session's connect_url in his own browser and forwarded
    Apicbase's authorize URL (with his state) to a victim, when the victim's browser comes back
    with her code, then a 400 page says the sign-in was started in another browser, her code
    is never exchanged, nothing is stored, and the session cannot be used again, not even by
    the attacker's browser."""
    started = session(deps)
    browser.open(started.connect_url)  # the attacker's browser
    victims_code = apicbase.issue_code()

    refused = public("/oauth/callback", {"code": victims_code, "state": started.state})  # no cookie

    assert refused["statusCode"] == 400
    assert "started in another browser" in refused["body"]
    assert apicbase.token_requests == 0
    assert stored(deps) is None
    assert deps.connections.table.get_item(Key={"pk": state_key(started.state)}).get("Item") is None
    assert browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})["statusCode"] == 400
    assert apicbase.token_requests == 0


def test_a_binder_of_another_session_is_refused(deps, apicbase, public) -> None:
    """Given two sessions opened in two browsers, when one browser's cookie comes back with the
    other session's state, then it is refused without a code exchange."""
    first, second = session(deps), session(deps)
    first_cookie = Browser(public)
    first_cookie.open(first.connect_url)
    Browser(public).open(second.connect_url)

    response = first_cookie.get("/oauth/callback", {"code": apicbase.issue_code(), "state": second.state})

    assert response["statusCode"] == 400 and "another browser" in response["body"]
    assert apicbase.token_requests == 0


def test_a_session_never_opened_through_connect_url_cannot_complete(deps, apicbase, public) -> None:
    """Given a state read from the table before connect_url was opened (the start item is the
    one place it is written), when a callback brings it with any cookie, then it is refused:
    an unbound session has no binder to match."""
    session(deps)
    [start] = [i for i in deps.connections.table.scan()["Items"] if i["pk"].startswith("START#")]
    state = state_of(start["authorize_url"])

    response = public(
        "/oauth/callback",
        {"code": apicbase.issue_code(), "state": state},
        cookies=[f"{pages.BINDER_COOKIE}=" + "B" * 43],
    )

    assert response["statusCode"] == 400
    assert apicbase.token_requests == 0


def test_a_browser_mismatch_is_a_page_not_a_hand_over_to_return_url(deps, apicbase, public) -> None:
    """Given a session with a return_url, when its callback comes from another browser, then the
    person sees the 400 page here: whoever is in that browser did not start this flow, so the
    integrator's page (and its connection id) is not theirs to see."""
    started = session(deps, return_url=RETURN_URL)
    Browser(public).open(started.connect_url)

    response = public("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 400 and "Location" not in response["headers"]
    assert CID not in response["body"]


# --- expected_username -------------------------------------------------------------------------------
def test_the_expected_user_connects_as_usual(deps, apicbase, browser) -> None:
    """Given a session expecting the Apicbase user who then signs in, then the connection is
    stored as usual, with that username."""
    started = session(deps, expected_username="chef@example.com")
    browser.open(started.connect_url)

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 200
    assert deps.connections.get(CID).username == "chef@example.com"
    assert apicbase.revocations == 0


def test_the_identity_check_is_the_callbacks_only_introspection_and_its_answer_is_stored_with_the_grant(
    deps, apicbase, browser
) -> None:
    """Given a session expecting the Apicbase user who then signs in, then Apicbase is asked who
    signed in once, and the write that stores the grant already holds the username (the second
    write records the library's name, which user_info tells after the grant is stored)."""
    started = session(deps, expected_username="chef@example.com")
    browser.open(started.connect_url)
    writes: list[tuple[str, bool]] = []
    for table in (deps.connections.table, deps.connections.must_land):  # the grant's write has its own client
        table.meta.client.meta.events.register(
            "before-call.dynamodb",
            lambda model, params, **_: writes.append((model.name, ":username" in str(params.get("body")))),
        )
    asked = apicbase.token_requests, apicbase.introspections

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 200
    assert (apicbase.token_requests - asked[0], apicbase.introspections - asked[1]) == (1, 1)
    assert writes[:2] == [("DeleteItem", False), ("UpdateItem", True)]  # the state taken, the grant stored
    assert deps.connections.get(CID).username == "chef@example.com"


def test_another_apicbase_user_than_expected_stores_nothing_and_revokes_the_grant(deps, apicbase, browser) -> None:
    """Given a session expecting one Apicbase user, when another signs in, then nothing is
    stored, the refresh token just issued is revoked at Apicbase (its access token with it), and
    the page says a different user signed in."""
    started = session(deps, expected_username="owner@example.com")
    browser.open(started.connect_url)

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 400
    assert "different user than expected" in response["body"]
    assert stored(deps) is None
    assert apicbase.revocations == 1
    assert apicbase.live_refresh_tokens == set() and apicbase.access_tokens == {}


def test_another_user_than_expected_does_not_replace_an_existing_connection(deps, apicbase, browser) -> None:
    """Given a connection made by its owner, when a reconnect expecting the owner is completed
    by someone else, then the owner's grant stays stored and live, and the newcomer's is revoked."""
    first = session(deps)
    browser.open(first.connect_url)
    browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": first.state})
    owners = apicbase.issued_refresh_tokens[-1]
    apicbase.username = "intruder@example.com"
    second = session(deps, expected_username="chef@example.com")
    browser.open(second.connect_url)

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": second.state})

    assert response["statusCode"] == 400
    assert deps.cipher.decrypt(CID, deps.connections.get(CID).tokens).refresh_token == owners
    assert apicbase.live_refresh_tokens == {owners}


def test_an_identity_that_cannot_be_checked_fails_closed(
    deps, apicbase, browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a session with expected_username and an introspection endpoint that fails, then
    nothing is stored, the grant is revoked, and a 503 page says to try again."""

    def down(*args: Any, **kwargs: Any) -> None:
        raise ApicbaseUnavailable("Apicbase answered HTTP 503", request_sent=True)

    monkeypatch.setattr(deps.apicbase, "introspect", down)
    started = session(deps, expected_username="chef@example.com")
    browser.open(started.connect_url)

    response = browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": started.state})

    assert response["statusCode"] == 503
    assert "could not confirm who signed in" in response["body"]
    assert stored(deps) is None
    assert apicbase.revocations == 1 and apicbase.live_refresh_tokens == set()


def test_expected_username_goes_back_in_the_answer_and_never_in_connect_url(deps) -> None:
    """Given a session with expected_username, then connect_url carries the one-time id only."""
    started = session(deps, expected_username="chef@example.com")

    assert set(parse_qs(urlsplit(started.connect_url).query)) == {"session"}
    assert started.state not in started.connect_url and "chef" not in started.connect_url
    assert started.expected_username == "chef@example.com"


def test_states_start_ids_and_binders_are_never_logged(
    deps, apicbase, browser, public, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a connect_url opened twice, a callback from another browser, one from the right
    browser and a refused identity, then no log line holds a state, a start id or a binder
    (yet the logs say what happened)."""
    first, second = session(deps), session(deps, expected_username="owner@example.com")
    with captured_logs(caplog) as logs:
        browser.open(first.connect_url)
        binders = [browser.jar[pages.binder_cookie_name(binder_tag(first.state))]]
        browser.open(first.connect_url)
        public("/oauth/callback", {"code": apicbase.issue_code(), "state": first.state})
        browser.open(second.connect_url)
        binders.append(browser.jar[pages.binder_cookie_name(binder_tag(second.state))])
        browser.get("/oauth/callback", {"code": apicbase.issue_code(), "state": second.state})
        text = logs()

    secrets = [first.state, second.state, *binders, start_id_of(first.connect_url), start_id_of(second.connect_url)]
    assert "callback from another browser" in text and "not the expected Apicbase user" in text
    assert [secret for secret in secrets if secret in text] == []


@pytest.mark.parametrize(
    ("redirect_uri", "start"),
    [
        ("https://broker.example.com/oauth/callback", "https://broker.example.com/oauth/start"),
        ("https://api.example.com/prod/oauth/callback", "https://api.example.com/prod/oauth/start"),
        ("http://127.0.0.1:3000/oauth/callback", "http://127.0.0.1:3000/oauth/start"),
        ("https://oauth.example.com/apicbase/return", "https://oauth.example.com/oauth/start"),
    ],
)
def test_connect_url_is_on_the_callbacks_host(redirect_uri: str, start: str) -> None:
    """Given a redirect URI (custom domains and base paths included), then connect_url is GET
    /oauth/start on the same origin: the __Host- cookie it sets reaches only that host."""
    url = signin._start_url(redirect_uri, "S" * 43)

    assert url == f"{start}?session={'S' * 43}"
