"""The public callback, through its real Lambda handler: the state is consumed before anything
else, every failure is a page that says what to do, and nothing secret is echoed or logged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from apicbase_oauth.adapters.dynamodb import state_key
from apicbase_oauth.edge import pages
from apicbase_oauth.errors import ApicbaseUnavailable
from tests import fakes
from tests.binding import open_in_browser
from tests.conftest import load_event
from tests.unit.logcapture import captured_logs

CID = "lib-42"
RETURN_URL = "https://integrator.example.com/apicbase/done?tenant=7"
FORGED_STATE = "A" * 43  # the shape of a real state, never issued
SCRIPT = "<script>alert(1)</script>"

Callback = Callable[..., dict[str, Any]]


@pytest.fixture
def callback(load_handler, deps, lambda_context) -> Callback:
    """Call the callback handler with query parameters, as API Gateway would."""
    module = load_handler("CallbackFunction")
    module.DEPS = deps  # the test's clock and moto session, so states expire when the test says

    def call(
        params: dict[str, str], *, event_name: str = "callback.json", binder: str | None = BROWSER
    ) -> dict[str, Any]:
        """``binder``: the cookie's value; by default, the one the state's browser was given."""
        event = load_event(event_name)
        event["queryStringParameters"] = params or None  # API Gateway omits an empty query
        event["rawQueryString"] = urlencode(params)
        if binder is BROWSER:
            binder = BINDERS.get(params.get("state", ""))
        if binder is not None:
            event["cookies"] = ["theme=dark", f"{pages.BINDER_COOKIE}={binder}"]
        return module.lambda_handler(event, lambda_context)

    return call


# Each state's binder, as the browser that opened its connect_url holds it in a cookie.
BINDERS: dict[str, str] = {}
BROWSER: Any = object()  # the callback's default: the cookie of the browser that started


def start(deps, **fields: Any) -> str:
    """A connect session for CID, as an integrator starts it and a person's browser opens its
    connect_url; returns its one-time state (the browser's binder is in BINDERS)."""
    state, binder = open_in_browser(deps, CID, **fields)
    BINDERS[state] = binder
    return state


def state_item(deps, state: str) -> dict[str, Any] | None:
    return deps.connections.table.get_item(Key={"pk": state_key(state)}).get("Item")


def assert_page(response: dict[str, Any], status: int) -> str:
    """A clean HTML page that no cache or referrer keeps; returns its body."""
    headers = response["headers"]
    assert response["statusCode"] == status
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    return response["body"]


# --- success -----------------------------------------------------------------------------------
def test_callback_stores_the_connection_and_answers_a_page(callback, deps, apicbase) -> None:
    """Given a connect session, when Apicbase redirects back with a code, then the code is
    exchanged once, the tokens are stored encrypted with the introspected username and the
    user's library, and the person sees a no-store page saying that library is connected, and
    as whom (not the connection id: that is the integrator's own)."""
    state = start(deps)
    code = apicbase.issue_code()

    body = assert_page(callback({"code": code, "state": state}), 200)

    connection = deps.connections.get(CID)
    access, refresh = next(iter(apicbase.access_tokens)), apicbase.issued_refresh_tokens[-1]
    assert apicbase.token_requests == 1
    assert (connection.status, connection.username, connection.version) == ("active", "chef@example.com", 1)
    assert connection.library == "Chef's kitchen"
    pair = deps.cipher.decrypt(CID, connection.tokens)
    assert (pair.access_token, pair.refresh_token) == (access, refresh)
    assert access.encode() not in connection.tokens and refresh.encode() not in connection.tokens
    assert "Your Apicbase library Chef&#x27;s kitchen is connected, signed in as chef@example.com." in body
    assert CID not in body
    assert access not in body and refresh not in body and code not in body and state not in body


def test_callback_redirects_to_the_sessions_return_url(callback, deps, apicbase) -> None:
    """Given a session with a return_url, when the callback succeeds, then the person is sent
    there (302) with the connection id, and neither the code nor the state goes along."""
    state = start(deps, return_url=RETURN_URL)
    code = apicbase.issue_code()

    response = callback({"code": code, "state": state})

    location = response["headers"]["Location"]
    assert response["statusCode"] == 302
    assert response["headers"]["Cache-Control"] == "no-store"
    assert response["headers"]["Referrer-Policy"] == "no-referrer"
    assert location.startswith("https://integrator.example.com/apicbase/done?")
    assert parse_qs(urlsplit(location).query) == {"tenant": ["7"], "connection_id": [CID], "status": ["connected"]}
    assert code not in location and state not in location


def test_reconnecting_replaces_the_tokens_of_the_same_connection(callback, deps, apicbase) -> None:
    """Given a connected library, when it is connected again, then the same connection id holds
    the new pair and its version grows (a refresh in flight for the old grant cannot win)."""
    callback({"code": apicbase.issue_code(), "state": start(deps)})
    first = deps.connections.get(CID)

    assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 200)

    second = deps.connections.get(CID)
    pair = deps.cipher.decrypt(CID, second.tokens)
    assert second.version == first.version + 1
    assert second.created_at == first.created_at
    assert pair.refresh_token == apicbase.issued_refresh_tokens[-1] != apicbase.issued_refresh_tokens[0]


def test_a_failed_introspection_does_not_fail_the_connect(
    callback, deps, apicbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the introspection endpoint is down, when the callback completes, then the
    connection is stored anyway, without a username."""

    def down(*args: Any, **kwargs: Any) -> None:
        raise ApicbaseUnavailable("Apicbase answered HTTP 503", request_sent=True)

    monkeypatch.setattr(deps.apicbase, "introspect", down)

    body = assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 200)

    assert deps.connections.get(CID).status == "active"
    assert deps.connections.get(CID).username is None
    assert "connected" in body


def test_the_grant_is_stored_before_the_username_is_asked_for(
    callback, deps, apicbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a fresh grant, when the callback asks Apicbase who the user is, then the tokens are
    already in the table: a slow introspection cannot outlast the function with the only copy
    of the refresh token in memory."""
    seen_at_introspection: list[str | None] = []
    introspect = deps.apicbase.introspect

    def watching(credentials: Any, *, token: str) -> Any:
        seen_at_introspection.append(deps.cipher.decrypt(CID, deps.connections.get(CID).tokens).refresh_token)
        return introspect(credentials, token=token)

    monkeypatch.setattr(deps.apicbase, "introspect", watching)

    assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 200)

    assert seen_at_introspection == [apicbase.issued_refresh_tokens[-1]]
    assert deps.connections.get(CID).username == "chef@example.com"


# --- states that must never reach the token endpoint -----------------------------------------------
def test_a_missing_or_forged_state_is_refused_before_the_token_endpoint(callback, deps, apicbase, subtests) -> None:
    """Given a callback whose state was never issued, then a 400 page says to start again and
    Apicbase's token endpoint is never called."""
    start(deps)  # a live session exists, and must not be usable without its state
    for name, state in [
        ("no-state", None),
        ("empty-state", ""),
        ("forged-state", FORGED_STATE),
        ("malformed-state", "too-short"),
        ("huge-state", "x" * 5000),
    ]:
        with subtests.test(name):
            params = {"code": apicbase.issue_code()} | ({} if state is None else {"state": state})

            body = assert_page(callback(params), 400)

            assert apicbase.token_requests == 0
            assert "start" in body.lower()


def test_an_expired_state_is_refused_although_its_item_still_exists(callback, deps, apicbase, clock) -> None:
    """Given a session older than STATE_TTL (DynamoDB's TTL has not deleted it yet), when its
    callback arrives, then it is refused and no token is requested."""
    state = start(deps)
    clock.advance(deps.settings.state_ttl_seconds + 1)

    assert_page(callback({"code": apicbase.issue_code(), "state": state}), 400)

    assert apicbase.token_requests == 0
    assert state_item(deps, state) is not None


def test_a_reused_state_is_refused(callback, deps, apicbase) -> None:
    """Given a state that completed a connect, when it comes back with another code, then it
    is refused and the second code is never exchanged."""
    state = start(deps)
    callback({"code": apicbase.issue_code(), "state": state})

    assert_page(callback({"code": apicbase.issue_code(), "state": state}), 400)

    assert apicbase.token_requests == 1
    assert deps.connections.get(CID).version == 1


# --- Apicbase says no --------------------------------------------------------------------------------
def test_access_denied_answers_a_page_and_consumes_the_state(callback, deps, apicbase) -> None:
    """Given the person declined on Apicbase, when the error callback arrives, then a 400 page
    says nothing was connected, no token is requested, and the state cannot be used again."""
    state = start(deps)

    body = assert_page(callback({"error": "access_denied", "state": state}, event_name="callback_error.json"), 400)

    assert apicbase.token_requests == 0
    assert state_item(deps, state) is None
    assert "not granted" in body
    assert_page(callback({"code": apicbase.issue_code(), "state": state}), 400)
    assert apicbase.token_requests == 0


def test_access_denied_with_a_return_url_hands_back_to_the_integrator(callback, deps, apicbase) -> None:
    """Given a session with a return_url, when the person declines, then the integrator's page
    gets the connection id and error=access_denied, and no token is requested."""
    state = start(deps, return_url=RETURN_URL)

    response = callback({"error": "access_denied", "state": state}, event_name="callback_error.json")

    query = parse_qs(urlsplit(response["headers"]["Location"]).query)
    assert response["statusCode"] == 302
    assert query == {"tenant": ["7"], "connection_id": [CID], "error": ["access_denied"]}
    assert apicbase.token_requests == 0


def test_an_expired_code_says_start_again(callback, deps, apicbase) -> None:
    """Given Apicbase answers invalid_grant (the code lived past its 60 seconds), then a 400
    page tells the person to start again, and nothing is stored."""
    apicbase.scripted.append((400, {"error": "invalid_grant"}, {}))

    body = assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 400)

    assert "Start connecting again" in body
    assert "60 seconds" in body
    assert deps.connections.table.get_item(Key={"pk": f"CONN#{CID}"}).get("Item") is None


def test_apicbase_down_answers_503(callback, deps, apicbase, subtests) -> None:
    """Given Apicbase's token endpoint fails with a 5xx, then the page is a 503 that says to wait
    and start again, and Apicbase's own page is not shown."""
    for status, body in [
        (500, "<html><h1>Server Error (500)</h1></html>"),
        (503, {"error": "temporarily_unavailable"}),
    ]:
        with subtests.test(status=status):
            apicbase.scripted.append((status, body, {}))

            page = assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 503)

            assert "Wait a minute" in page
            assert "Server Error" not in page


def test_a_rotated_client_secret_is_read_again_and_the_code_exchanged_once_more(callback, deps, apicbase, aws) -> None:
    """Given the client secret was rotated (in Apicbase and in Secrets Manager) after this
    container cached it, when a callback arrives, then Apicbase's invalid_client makes the
    broker read the secret again and present the same code once more, and the connect succeeds."""
    state = start(deps)  # reads, and caches, the old secret
    apicbase.client_secret = "rotated-secret-0002"
    aws.session.client("secretsmanager").put_secret_value(
        SecretId=deps.settings.client_secret_id,
        SecretString=json.dumps({"default": {"client_id": fakes.CLIENT_ID, "client_secret": "rotated-secret-0002"}}),
    )

    assert_page(callback({"code": apicbase.issue_code(), "state": state}), 200)

    assert apicbase.token_requests == 2
    assert deps.connections.get(CID).username == "chef@example.com"


def test_rejected_client_credentials_are_not_retried_and_the_page_says_whom_to_tell(callback, deps, apicbase) -> None:
    """Given Apicbase rejects the client and the secret has not changed, then the code is
    presented once only, and a 502 page says to tell the broker's operator."""
    apicbase.client_secret = "what-apicbase-expects"

    body = assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 502)

    assert apicbase.token_requests == 1
    assert "operator" in body


# --- nothing hostile is reflected, nothing secret is logged --------------------------------------------
def test_hostile_query_values_are_never_reflected_raw(callback, subtests) -> None:
    """Given markup in any query value, then the error page contains no raw markup of it."""
    for name, params in [
        ("script-state-and-code", {"state": SCRIPT, "code": SCRIPT}),
        ("script-error", {"state": FORGED_STATE, "error": SCRIPT, "error_description": SCRIPT}),
        ("attribute-breakout", {"state": FORGED_STATE, "code": f'"><img src=x onerror=alert(1)>{SCRIPT}'}),
    ]:
        with subtests.test(name):
            body = assert_page(callback(params), 400)

            assert "<script" not in body.lower()
            assert "<img" not in body.lower()


def test_an_error_with_a_live_state_reflects_no_markup(callback, deps, apicbase) -> None:
    """Given a live state and an unknown error value carrying markup, then the page names a
    generic failure and contains no raw markup, and no token is requested."""
    body = assert_page(callback({"state": start(deps), "error": SCRIPT}), 400)

    assert "<script" not in body.lower()
    assert "authorization_failed" in body
    assert apicbase.token_requests == 0


def test_an_introspected_username_is_html_escaped(callback, deps, apicbase) -> None:
    """Given Apicbase reports a username carrying markup, then the success page escapes it."""
    apicbase.username = SCRIPT

    body = assert_page(callback({"code": apicbase.issue_code(), "state": start(deps)}), 200)

    assert "<script" not in body.lower()
    assert "&lt;script&gt;" in body


def test_codes_states_tokens_and_secrets_are_never_logged(
    callback, deps, apicbase, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a successful connect, a reused state, a declined sign-in and an expired code, then
    no log line holds a code, a state, a token or the client secret (yet the logs say something)."""
    states = [start(deps) for _ in range(3)]
    codes = [apicbase.issue_code() for _ in range(3)]
    with captured_logs(caplog) as logs:
        callback({"code": codes[0], "state": states[0]})
        callback({"code": codes[1], "state": states[0]})
        callback({"error": "access_denied", "state": states[1]}, event_name="callback_error.json")
        apicbase.scripted.append((400, {"error": "invalid_grant"}, {}))
        callback({"code": codes[2], "state": states[2]})
        text = logs()

    secrets = [*codes, *states, *apicbase.issued_refresh_tokens, *apicbase.access_tokens, fakes.CLIENT_SECRET]
    assert "connection stored" in text and "callback failed" in text
    for secret in secrets:
        assert secret not in text
