"""The Apicbase client against canned HTTP answers (``responses``): what it sends, what it
keeps, and how every kind of bad answer is classified, without ever echoing the client secret."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import json
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from apicbase_oauth import connect
from apicbase_oauth.adapters.apicbase import ApicbaseClient, ClientCredentials, TokenResponse
from apicbase_oauth.adapters.dynamodb import state_key
from apicbase_oauth.edge import checks, gateway
from apicbase_oauth.errors import (
    ApicbaseRejected,
    ApicbaseUnavailable,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    MalformedResponse,
    RateLimited,
)
from tests import fakes
from tests.binding import start_id_of
from tests.conftest import CALLBACK_URL, Clock

CREDENTIALS = ClientCredentials("default", fakes.CLIENT_ID, fakes.CLIENT_SECRET)
GOOD_TOKENS = {
    "access_token": "access-abc",
    "refresh_token": "refresh-abc",
    "expires_in": 604800,
    "token_type": "Bearer",
    "scope": "accounts library",
}


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(clock: Clock) -> ApicbaseClient:
    return ApicbaseClient(
        authorize_url=fakes.AUTHORIZE_URL,
        token_url=fakes.TOKEN_URL,
        introspect_url=fakes.INTROSPECT_URL,
        now=clock,
    )


def answer(http: responses.RequestsMock, url: str, status: int, body: Any, headers: dict[str, str] | None = None):
    """One canned answer; a str body is sent as is (HTML, truncated JSON), anything else as JSON."""
    text = body if isinstance(body, str) else json.dumps(body)
    http.add(responses.POST, url, body=text, status=status, headers=headers or {})


def sent_form(http: responses.RequestsMock, index: int = -1) -> dict[str, str]:
    body = http.calls[index].request.body
    return {k: v[0] for k, v in parse_qs(body if isinstance(body, str) else body.decode()).items()}


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- authorize URL ------------------------------------------------------------------------------
def test_authorize_url_carries_exactly_what_apicbase_needs(client: ApicbaseClient) -> None:
    """Given a state, scopes and the registered redirect URI, when the URL is built, then the
    authorize endpoint gets them unchanged and nothing about PKCE (off by default)."""
    url = client.authorize_url(
        client_id=fakes.CLIENT_ID, redirect_uri=CALLBACK_URL, scopes=("accounts", "library"), state="s" * 43
    )

    assert url.startswith(fakes.AUTHORIZE_URL + "?")
    assert query_of(url) == {
        "response_type": ["code"],
        "client_id": [fakes.CLIENT_ID],
        "scope": ["accounts library"],
        "state": ["s" * 43],
        "redirect_uri": [CALLBACK_URL],
    }


def test_connect_session_uses_the_configured_redirect_uri_and_a_fresh_state(deps) -> None:
    """Given CALLBACK_URL is configured, when a session starts, then the authorize URL names that
    exact redirect URI (not the request's domain), the default scopes, and the state handed back."""
    session = connect.start_connect_session(
        deps, "lib-1", redirect_uri=gateway.redirect_uri(deps.settings.callback_url, "other.example.com")
    )

    query = query_of(session.authorize_url)
    assert query["redirect_uri"] == [CALLBACK_URL]
    assert query["scope"] == ["accounts library"]
    assert query["state"] == [session.state]
    assert "code_challenge" not in query


def test_connect_session_rejects_a_scope_apicbase_does_not_know(deps) -> None:
    """Given a scope outside Apicbase's list, when a session starts, then it is refused."""
    with pytest.raises(InvalidRequest) as raised:
        connect.start_connect_session(
            deps, "lib-1", redirect_uri=CALLBACK_URL, scopes=checks.scopes(["library", "admin"])
        )

    assert raised.value.code == "invalid_scope"


def test_pkce_when_enabled_sends_an_s256_challenge_and_later_its_verifier(
    deps, http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given PKCE is enabled, when a session starts, then the URL carries an S256 challenge of the
    stored verifier; and when the callback exchanges the code, then that verifier is sent."""
    monkeypatch.setattr(deps, "settings", dataclasses.replace(deps.settings, pkce_enabled=True))
    session = connect.start_connect_session(deps, "lib-1", redirect_uri=CALLBACK_URL)
    query = query_of(session.authorize_url)
    verifier = deps.connections.table.get_item(Key={"pk": state_key(session.state)})["Item"]["code_verifier"]
    binder = connect.begin_sign_in(deps, start_id=start_id_of(session.connect_url)).binder
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    answer(http, fakes.TOKEN_URL, 200, GOOD_TOKENS)
    answer(http, fakes.INTROSPECT_URL, 200, {"active": False})

    connect.complete_callback(deps, state=session.state, code="code-1", error=None, binder=binder)

    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [expected]
    assert sent_form(http, 0)["code_verifier"] == verifier


# --- successful answers ---------------------------------------------------------------------------
def test_code_exchange_posts_the_grant_and_computes_expires_at_on_receipt(
    client: ApicbaseClient, http: responses.RequestsMock, clock: Clock
) -> None:
    """Given Apicbase takes 7 seconds to answer, when a code is exchanged, then the form is the
    authorization-code grant with the client's credentials and expires_at counts from receipt."""
    sent_at = clock()

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        clock.advance(7)
        return 200, {}, json.dumps(GOOD_TOKENS)

    http.add_callback(responses.POST, fakes.TOKEN_URL, callback=slow)

    tokens = client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL)

    assert sent_form(http) == {
        "grant_type": "authorization_code",
        "code": "code-1",
        "redirect_uri": CALLBACK_URL,
        "client_id": fakes.CLIENT_ID,
        "client_secret": fakes.CLIENT_SECRET,
    }
    assert (tokens.access_token, tokens.refresh_token, tokens.scope) == (
        "access-abc",
        "refresh-abc",
        "accounts library",
    )
    assert tokens.expires_at == int(sent_at) + 7 + 604800


def test_refresh_returns_the_rotated_refresh_token(client: ApicbaseClient, http: responses.RequestsMock) -> None:
    """Given Apicbase rotates, when a refresh succeeds, then the new refresh token is returned."""
    answer(http, fakes.TOKEN_URL, 200, {**GOOD_TOKENS, "refresh_token": "refresh-new"})

    tokens = client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert sent_form(http)["grant_type"] == "refresh_token"
    assert sent_form(http)["refresh_token"] == "refresh-old"
    assert tokens.refresh_token == "refresh-new"


@pytest.mark.parametrize("missing", [{"refresh_token": None}, {"refresh_token": ""}, {}])
def test_refresh_without_a_refresh_token_keeps_the_old_one(
    client: ApicbaseClient, http: responses.RequestsMock, missing: dict[str, Any]
) -> None:
    """Given a refresh answer without a (usable) refresh_token, when it is parsed, then the one
    presented is kept, because the connection would be lost otherwise."""
    body = {k: v for k, v in GOOD_TOKENS.items() if k != "refresh_token"} | missing
    answer(http, fakes.TOKEN_URL, 200, body)

    tokens = client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert tokens.refresh_token == "refresh-old"
    assert tokens.access_token == "access-abc"


def test_introspection_of_an_active_token(client: ApicbaseClient, http: responses.RequestsMock) -> None:
    """Given an active token, when it is introspected, then scope, exp, client and username come back."""
    answer(
        http,
        fakes.INTROSPECT_URL,
        200,
        {"active": True, "scope": "library", "exp": 1_800_000_000, "client_id": "c", "username": "chef"},
    )

    result = client.introspect(CREDENTIALS, token="access-abc")

    assert sent_form(http) == {
        "token": "access-abc",
        "client_id": fakes.CLIENT_ID,
        "client_secret": fakes.CLIENT_SECRET,
    }
    assert (result.active, result.scope, result.exp, result.client_id, result.username) == (
        True,
        "library",
        1_800_000_000,
        "c",
        "chef",
    )


def test_introspection_of_an_inactive_token(client: ApicbaseClient, http: responses.RequestsMock) -> None:
    """Given an expired or revoked token, when it is introspected, then only active=False is known."""
    answer(http, fakes.INTROSPECT_URL, 200, {"active": False, "username": "ignored"})

    result = client.introspect(CREDENTIALS, token="access-abc")

    assert result.active is False
    assert result.username is None


def test_introspection_without_a_boolean_active_is_malformed(
    client: ApicbaseClient, http: responses.RequestsMock
) -> None:
    """Given an introspection answer whose active is not a boolean, then it is not trusted."""
    answer(http, fakes.INTROSPECT_URL, 200, {"active": "yes"})

    with pytest.raises(MalformedResponse):
        client.introspect(CREDENTIALS, token="access-abc")


# --- error taxonomy ----------------------------------------------------------------------------
HTML_PAGE = "<!doctype html><html><body><h1>Server Error (500)</h1></body></html>"


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (400, {"error": "invalid_grant"}, InvalidGrant, "invalid_grant"),
        (401, {"error": "invalid_client"}, InvalidClient, "invalid_client"),
        (400, {"error": "invalid_client"}, InvalidClient, "invalid_client"),
        (401, HTML_PAGE, InvalidClient, "invalid_client"),
        (400, {"error": "invalid_scope"}, ApicbaseRejected, "invalid_scope"),
        (403, HTML_PAGE, ApicbaseRejected, "apicbase_rejected"),
        (302, "", ApicbaseRejected, "apicbase_rejected"),
        (500, HTML_PAGE, ApicbaseUnavailable, "apicbase_unavailable"),
        (502, "Bad Gateway", ApicbaseUnavailable, "apicbase_unavailable"),
        (503, {"error": "temporarily_unavailable"}, ApicbaseUnavailable, "apicbase_unavailable"),
    ],
    ids=[
        "invalid_grant",
        "invalid_client-401",
        "invalid_client-400",
        "401-html",
        "other-oauth-error",
        "403-html",
        "redirect",
        "500-html",
        "502-text",
        "503-json",
    ],
)
def test_error_answers_are_classified(
    client: ApicbaseClient, http: responses.RequestsMock, status: int, body: Any, expected: type, code: str
) -> None:
    """Given an error answer from the token endpoint, when a refresh is attempted, then it maps
    to one exception of the taxonomy with a stable code."""
    answer(http, fakes.TOKEN_URL, status, body)

    with pytest.raises(expected) as raised:
        client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert raised.value.code == code
    if expected is ApicbaseUnavailable:
        assert raised.value.request_sent is True  # it reached Apicbase: never retry blindly


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"Retry-After": "30"}, 30.0), ({"Retry-After": "garbage"}, 60.0), ({}, 60.0), ({"Retry-After": "99999"}, 3600.0)],
    ids=["seconds", "unparsable", "absent", "capped"],
)
def test_rate_limit_reports_retry_after_in_seconds(
    client: ApicbaseClient, http: responses.RequestsMock, headers: dict[str, str], seconds: float
) -> None:
    """Given a 429, when it is classified, then Retry-After becomes seconds (default 60, capped)."""
    answer(http, fakes.TOKEN_URL, 429, {"detail": "Request was throttled."}, headers)

    with pytest.raises(RateLimited) as raised:
        client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert raised.value.retry_after == seconds


def test_rate_limit_with_an_http_date_counts_from_the_clock(
    client: ApicbaseClient, http: responses.RequestsMock, clock: Clock
) -> None:
    """Given a 429 whose Retry-After is an HTTP date two minutes ahead, then retry_after is 120 s."""
    answer(http, fakes.TOKEN_URL, 429, "", {"Retry-After": email.utils.formatdate(clock() + 120, usegmt=True)})

    with pytest.raises(RateLimited) as raised:
        client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert raised.value.retry_after == 120.0


def _refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, fakes.TOKEN_URL, reason=reason))  # type: ignore[arg-type]


def _reset() -> requests.exceptions.ConnectionError:
    reason = ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    return requests.exceptions.ConnectionError(reason)


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), False),
        (_refused(), False),
        (requests.exceptions.ReadTimeout("read timed out"), True),
        (_reset(), True),
    ],
    ids=["connect-timeout", "connection-refused", "read-timeout", "connection-reset"],
)
def test_network_failures_say_whether_the_request_may_have_reached_apicbase(
    client: ApicbaseClient, http: responses.RequestsMock, error: Exception, sent: bool
) -> None:
    """Given a network failure, when a refresh is attempted, then it is transient, and
    request_sent is False only when nothing can have reached Apicbase (so a retry is safe)."""
    http.add(responses.POST, fakes.TOKEN_URL, body=error)

    with pytest.raises(ApicbaseUnavailable) as raised:
        client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert raised.value.request_sent is sent


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        HTML_PAGE,
        '{"access_token": "access-abc", "expires_in": 60',
        [GOOD_TOKENS],
        {**GOOD_TOKENS, "refresh_token": ["refresh-abc"]},
        {**GOOD_TOKENS, "refresh_token": "has spaces in it"},
        {**GOOD_TOKENS, "refresh_token": "r" * 8193},
        {"access_token": 12345, "expires_in": 60},
    ],
    ids=[
        "non-json",
        "html-error-page",
        "truncated-json",
        "json-array",
        "refresh_token-list",
        "refresh_token-spaces",
        "refresh_token-too-long",
        "no-refresh_token-nor-access_token",
    ],
)
def test_success_answers_without_a_usable_refresh_token_are_an_unknown_outcome(
    client: ApicbaseClient, http: responses.RequestsMock, body: Any
) -> None:
    """Given a 2xx that carries no usable refresh token, when a connection is refreshed, then it
    is MalformedResponse with request_sent: Apicbase may have rotated, so the witness decides
    (never a rejection that would present the old refresh token again)."""
    answer(http, fakes.TOKEN_URL, 200, body)

    with pytest.raises(MalformedResponse) as raised:
        client.refresh(CREDENTIALS, refresh_token="refresh-old")

    assert isinstance(raised.value, ApicbaseUnavailable) and raised.value.request_sent


@pytest.mark.parametrize(
    ("access_token", "oddity"),
    [
        (None, "access_token_missing"),
        ("", "access_token_missing"),
        (12345, "access_token_unusable"),
        ("has spaces in it", "access_token_unusable"),
        ("a" * 8193, "access_token_unusable"),
    ],
    ids=["missing", "empty", "number", "spaces", "too-long"],
)
def test_a_usable_refresh_token_is_kept_beside_an_unusable_access_token(
    client: ApicbaseClient, http: responses.RequestsMock, access_token: Any, oddity: str
) -> None:
    """Given a 2xx whose refresh token is usable but whose access token is not, when a code is
    exchanged, then the refresh token is kept and the access token is unusable (empty), expiring
    at once so that it is refreshed away before anyone uses it."""
    body = {k: v for k, v in GOOD_TOKENS.items() if k != "access_token"}
    if access_token is not None:
        body["access_token"] = access_token
    answer(http, fakes.TOKEN_URL, 200, body)

    tokens = client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL)

    assert (tokens.access_token, tokens.refresh_token) == ("", GOOD_TOKENS["refresh_token"])
    assert not tokens.access_token_usable
    assert (tokens.oddities, tokens.expires_at) == ((oddity,), int(tokens.received_at))


def test_tokens_longer_than_the_old_kms_limit_are_kept(client: ApicbaseClient, http: responses.RequestsMock) -> None:
    """Given tokens of 8,192 characters (the 2,040 limit came from KMS Encrypt, before envelope
    encryption), when a code is exchanged, then both are kept as they are."""
    long_access, long_refresh = "a" * 8192, "r" * 8192
    answer(http, fakes.TOKEN_URL, 200, {**GOOD_TOKENS, "access_token": long_access, "refresh_token": long_refresh})

    tokens = client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL)

    assert (tokens.access_token, tokens.refresh_token, tokens.oddities) == (long_access, long_refresh, ())


@pytest.mark.parametrize(
    ("body", "oddities", "expires_in", "scope"),
    [
        (
            {k: v for k, v in GOOD_TOKENS.items() if k != "expires_in"},
            ("expires_in_missing",),
            3600,
            "accounts library",
        ),
        ({**GOOD_TOKENS, "expires_in": 604800.0}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": "one week"}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": 3600.5}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": True}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": -1}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": 0}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "expires_in": 10**12}, ("expires_in_invalid",), 3600, "accounts library"),
        ({**GOOD_TOKENS, "token_type": "Bearer "}, (), 604800, "accounts library"),
        ({**GOOD_TOKENS, "token_type": "mac"}, ("token_type",), 604800, "accounts library"),
        ({**GOOD_TOKENS, "scope": 7}, ("scope",), 604800, None),
        ({**GOOD_TOKENS, "scope": "library " * 70}, ("scope",), 604800, None),
    ],
    ids=[
        "no-expires_in",
        "expires_in-float-whole",
        "expires_in-text",
        "expires_in-float",
        "expires_in-bool",
        "expires_in-negative",
        "expires_in-zero",
        "expires_in-huge",
        "token_type-trailing-space",
        "token_type-not-bearer",
        "scope-number",
        "scope-over-512",
    ],
)
def test_odd_answers_with_a_usable_pair_are_kept_with_a_safe_expiry(
    client: ApicbaseClient, http: responses.RequestsMock, body: Any, oddities: tuple, expires_in: int, scope: Any
) -> None:
    """Given a 200 with a well-formed access and refresh token but an odd other field, when a
    code is exchanged, then the pair is usable (a rotated refresh token is never discarded), an
    odd expires_in becomes the short safe one, and what was odd is named."""
    answer(http, fakes.TOKEN_URL, 200, body)

    tokens = client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL)

    assert (tokens.access_token, tokens.refresh_token) == (GOOD_TOKENS["access_token"], GOOD_TOKENS["refresh_token"])
    assert (tokens.oddities, tokens.expires_in, tokens.scope) == (oddities, expires_in, scope)


def test_expires_in_as_a_digit_string_is_accepted(client: ApicbaseClient, http: responses.RequestsMock) -> None:
    """Given expires_in sent as "3600" (some servers quote numbers), then it is read as 3600."""
    answer(http, fakes.TOKEN_URL, 200, {**GOOD_TOKENS, "expires_in": "3600", "token_type": "bearer"})

    assert client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL).expires_in == 3600


# --- the client secret stays secret ------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"error": "invalid_client", "error_description": f"bad secret {fakes.CLIENT_SECRET}"}, None),
        (400, {"error": fakes.CLIENT_SECRET}, None),
        (500, f"<pre>client_secret={fakes.CLIENT_SECRET}</pre>", None),
        (200, f"<html>{fakes.CLIENT_SECRET}</html>", None),
        (None, None, requests.exceptions.ReadTimeout(f"timed out sending client_secret={fakes.CLIENT_SECRET}")),
        (None, None, requests.exceptions.ConnectionError(f"reset: client_secret={fakes.CLIENT_SECRET}")),
    ],
    ids=["invalid_client-echo", "error-field-echo", "5xx-echo", "html-echo", "read-timeout", "connection-error"],
)
def test_the_client_secret_never_reaches_an_exception(
    client: ApicbaseClient, http: responses.RequestsMock, status: int | None, body: Any, error: Exception | None
) -> None:
    """Given an answer or a network error that echoes the client secret, when it is classified,
    then neither the exception's text, its repr, nor its printed traceback contains the secret."""
    if error is not None:
        http.add(responses.POST, fakes.TOKEN_URL, body=error)
    else:
        answer(http, fakes.TOKEN_URL, status or 200, body)

    with pytest.raises(Exception) as raised:
        client.exchange_code(CREDENTIALS, code="code-1", redirect_uri=CALLBACK_URL)

    printed = "".join(traceback.format_exception(raised.value))
    for text in (str(raised.value), repr(raised.value), printed):
        assert fakes.CLIENT_SECRET not in text


def test_reprs_of_credentials_and_tokens_hide_the_secrets() -> None:
    """Given credentials and a token response, when they are printed, then no secret shows."""
    tokens = TokenResponse("access-abc", "refresh-abc", 3600, "library", 0.0)

    printed = repr(CREDENTIALS) + repr(tokens) + str(CREDENTIALS) + str(tokens)

    for secret in (fakes.CLIENT_SECRET, "access-abc", "refresh-abc"):
        assert secret not in printed
