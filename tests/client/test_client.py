"""BrokerClient without network: the broker's API is answered by responses, AWS by moto."""

from __future__ import annotations

import datetime
import json
import pickle
import re
import threading
import time

import boto3
import pytest
import requests
import responses
from botocore.credentials import Credentials
from local.stack import free_port
from moto import mock_aws

from apicbase_broker import (
    BrokerClient,
    BrokerError,
    Busy,
    ConfigurationError,
    ConnectionNotFound,
    NeedsReauthorization,
    RateLimited,
)
from apicbase_broker.errors import retry_after
from apicbase_broker.signing import sign

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
PROXY = f"{API}/connections/lib-42/apicbase/"
TOKEN_URL = f"{API}/connections/lib-42/token"
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token="session-token")
WEEK = 604800


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock) -> BrokerClient:
    return BrokerClient(API, credentials=CREDENTIALS, clock=clock)


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def token_answer(access_token: str, expires_in: int = WEEK) -> dict:
    return {"connection_id": "lib-42", "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}


def error(status: int, code: str, message: str = "a message for people", **headers: str) -> responses.Response:
    return responses.Response(
        "GET", TOKEN_URL, status=status, json={"error": {"code": code, "message": message}}, headers=headers
    )


# --- Apicbase through the broker's proxy ---------------------------------------------------------
def test_a_relative_path_goes_to_the_proxy_signed(client, http):
    # Given the proxy answers Apicbase's products
    http.get(f"{PROXY}api/v2/products/", json={"results": []})
    # When an integrator lists products through the broker
    answer = client.apicbase("lib-42").get("api/v2/products/", params={"page": "2"})
    # Then the request went to the proxy with the query, SigV4-signed for execute-api in the URL's region
    request = http.calls[0].request
    assert answer.json() == {"results": []}
    assert request.url == f"{PROXY}api/v2/products/?page=2"
    assert "/eu-west-1/execute-api/aws4_request" in request.headers["Authorization"]
    assert request.headers["X-Amz-Security-Token"] == "session-token"


def test_the_signature_verifies_over_what_was_sent_body_included(client, http, monkeypatch):
    # Given a fixed time, and a POST with a JSON body through the proxy
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: datetime.datetime(2026, 11, 27, 12, 0))
    http.post(f"{PROXY}api/v2/products/", json={"id": 1}, status=201)
    client.apicbase("lib-42").post("api/v2/products/", json={"name": "flour"}, headers={"Authorization": "Bearer x"})
    sent = http.calls[0].request
    # When the request as sent is signed again by botocore
    signed_headers = {k: v for k, v in sent.headers.items() if k.lower() == "content-type"}
    again = sign("POST", sent.url, sent.body, signed_headers, credentials=CREDENTIALS, region="eu-west-1")
    # Then the signatures agree (method, path, query, body, content type), and the caller's
    # Authorization was replaced, not forwarded
    assert sent.headers["Authorization"] == again["Authorization"]
    assert json.loads(sent.body) == {"name": "flour"}
    assert "Bearer" not in sent.headers["Authorization"]
    tampered = sign("POST", sent.url, b'{"name": "sugar"}', signed_headers, credentials=CREDENTIALS, region="eu-west-1")
    assert tampered["Authorization"] != sent.headers["Authorization"]


def test_an_apicbase_url_such_as_the_next_page_goes_to_the_proxy(client, http):
    # Given Apicbase's pagination links to its own host
    http.get(f"{PROXY}api/v2/products/", json={"next": "https://api.apicbase.com/api/v2/products/?page=2"})
    http.get(f"{PROXY}api/v2/products/?page=2", json={"next": None})
    api = client.apicbase("lib-42")
    # When the integrator follows "next", Then it is fetched through the broker too
    assert api.get(api.get("api/v2/products/").json()["next"]).json() == {"next": None}
    assert http.calls[1].request.url == f"{PROXY}api/v2/products/?page=2"


@pytest.mark.parametrize("url", ["https://evil.example.com/api/", "//evil.example.com/x", "api/../../token", "./api"])
def test_a_url_off_apicbase_is_refused_before_anything_is_sent(client, http, url):
    # When the session is asked for another host, or for a path that climbs out of the proxy
    with pytest.raises(ValueError):
        client.apicbase("lib-42").get(url)
    # Then nothing was sent (a signature never leaves for another route or host)
    assert len(http.calls) == 0


def test_a_redirect_off_apicbase_is_followed_without_credentials(client, http):
    # Given the proxy redirects once within Apicbase, then to another host
    http.get(f"{PROXY}old/", status=301, headers={"Location": "https://api.apicbase.com/new/"})
    http.get(f"{PROXY}new/", status=302, headers={"Location": "https://cdn.example.com/file"})
    http.get("https://cdn.example.com/file", body=b"file")
    # When it is followed
    assert client.apicbase("lib-42").get("old/").content == b"file"
    # Then the hop on Apicbase went to the proxy, signed again; the foreign one carries no credentials
    assert http.calls[1].request.url == f"{PROXY}new/"
    assert http.calls[1].request.headers["Authorization"].startswith("AWS4-HMAC-SHA256")
    foreign = http.calls[2].request.headers
    assert not {"Authorization", "X-Amz-Security-Token", "X-Amz-Date"} & set(foreign)


def test_apicbase_s_own_errors_come_back_as_responses(client, http):
    # Given Apicbase answers 404 (its own document, not the broker's)
    http.get(f"{PROXY}api/v2/products/9/", status=404, json={"detail": "Not found."})
    # Then the integrator gets the response, as requests gives it
    assert client.apicbase("lib-42").get("api/v2/products/9/").status_code == 404


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(409, "needs_reauthorization", NeedsReauthorization), (404, "connection_not_found", ConnectionNotFound)],
)
def test_the_broker_s_own_errors_through_the_proxy_are_typed(client, http, status, code, kind):
    http.get(f"{PROXY}api/v2/products/", status=status, json={"error": {"code": code, "message": "m"}})
    with pytest.raises(kind):
        client.apicbase("lib-42").get("api/v2/products/")


# --- tokens, cached in the process ----------------------------------------------------------------
def test_a_token_is_cached_until_shortly_before_it_expires(client, http, clock):
    # Given the broker answers a token valid for an hour, then another
    http.get(TOKEN_URL, json=token_answer("first", expires_in=3600))
    # When it is asked for twice within the hour minus the margin
    assert client.token("lib-42") == "first"
    clock.now += 3600 - 61
    assert client.token("lib-42") == "first"
    # Then the broker was asked once; and once the margin (60 s) is reached, again
    assert len(http.calls) == 1
    http.replace(responses.GET, TOKEN_URL, json=token_answer("second"))
    clock.now += 1
    assert client.token("lib-42") == "second"
    assert len(http.calls) == 2


def test_the_cache_is_per_connection(client, http):
    http.get(TOKEN_URL, json=token_answer("for-42"))
    http.get(f"{API}/connections/lib-7/token", json=token_answer("for-7"))
    assert [client.token("lib-42"), client.token("lib-7"), client.token("lib-42")] == ["for-42", "for-7", "for-42"]
    assert len(http.calls) == 2


def test_a_rejected_token_is_reported_to_the_broker_which_answers_a_newer_one(client, http):
    # Given a cached token that Apicbase then refused (the broker's scheduled refresh replaced it)
    http.get(TOKEN_URL, json=token_answer("old"))
    client.token("lib-42")
    http.post(TOKEN_URL, json=token_answer("new"))
    # When the caller reports it, Then the broker is told which token was refused (in the body,
    # never a URL: it decides whether to refresh), and its newer one comes back
    assert client.token("lib-42", rejected="old") == "new"
    assert [c.request.method for c in http.calls] == ["GET", "POST"]
    assert json.loads(http.calls[1].request.body) == {"rejected_token": "old"}


def test_a_rejected_token_is_reported_once_for_all_threads(client, http):
    # Given a cached token Apicbase refused, and the broker answering a newer one when told
    http.get(TOKEN_URL, json=token_answer("old"))
    http.post(TOKEN_URL, json=token_answer("new"))
    client.token("lib-42")
    # When eight threads report it at once
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.token("lib-42", rejected="old"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the broker was told once, and every thread got the new token
    assert results == ["new"] * 8
    assert sum(c.request.method == "POST" for c in http.calls) == 1


def test_a_failed_refresh_leaves_no_rejected_token_in_the_cache(client, http):
    # Given a rejected token whose refresh the broker refuses (the grant is gone)
    http.get(TOKEN_URL, json=token_answer("old"))
    client.token("lib-42")
    http.post(TOKEN_URL, status=409, json={"error": {"code": "needs_reauthorization", "message": "reconnect"}})
    with pytest.raises(NeedsReauthorization) as raised:
        client.token("lib-42", rejected="old")
    # Then the error names no token, and the next call asks the broker again
    assert "old" not in str(raised.value) + repr(raised.value)
    client.token("lib-42")
    assert [c.request.method for c in http.calls] == ["GET", "POST", "GET"]


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (error(409, "needs_reauthorization"), NeedsReauthorization, "needs_reauthorization"),
        (error(404, "connection_not_found"), ConnectionNotFound, "connection_not_found"),
        (error(409, "refresh_in_progress"), Busy, "refresh_in_progress"),
        (error(503, "dependency_unavailable", **{"Retry-After": "3"}), Busy, "dependency_unavailable"),
        (
            responses.Response("GET", TOKEN_URL, status=429, json={"message": "Too Many Requests"}),
            RateLimited,
            "throttled",
        ),
        (responses.Response("GET", TOKEN_URL, status=403, json={"message": "Forbidden"}), BrokerError, "forbidden"),
        (error(500, "internal_error"), BrokerError, "internal_error"),
        (error(502, "invalid_client"), BrokerError, "invalid_client"),
        (responses.Response("GET", TOKEN_URL, status=502, body="<html>bad gateway</html>"), BrokerError, "http_error"),
    ],
)
def test_error_answers_map_to_typed_errors(client, http, answer, kind, code):
    # Given the broker (or API Gateway) answers an error
    http.add(answer)
    # When a token is asked for, Then the error's type and code are the answer's
    with pytest.raises(BrokerError) as raised:
        client.token("lib-42")
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.code) == (answer.status, code)


@pytest.mark.parametrize(
    "raised",
    [Busy(503, "refresh_in_progress", "m", retry_after=2.0), ConfigurationError("no region"), BrokerError(0, "x", "y")],
)
def test_errors_survive_pickling_as_task_queues_do(raised):
    restored = pickle.loads(pickle.dumps(raised))
    assert (type(restored), repr(restored), restored.retry_after) == (type(raised), repr(raised), raised.retry_after)


def test_busy_carries_retry_after(client, http):
    http.add(error(503, "refresh_in_progress", **{"Retry-After": "7"}))
    with pytest.raises(Busy) as raised:
        client.token("lib-42")
    assert raised.value.retry_after == 7


def test_retry_after_may_be_an_http_date():
    assert (
        retry_after(
            "Sun, 29 Nov 2026 12:00:30 GMT", now=datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC).timestamp()
        )
        == 30
    )
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_a_malformed_token_answer_names_no_token(client, http):
    # Given a 200 that carries a token but no expiry
    http.get(TOKEN_URL, json={"access_token": "s3cr3t-access-token"})
    # Then the error says what is missing, never the token
    with pytest.raises(BrokerError) as raised:
        client.token("lib-42")
    assert "s3cr3t" not in str(raised.value) + repr(raised.value)


def test_no_token_or_credential_in_any_repr(client, http):
    # Given a cached token
    http.get(TOKEN_URL, json=token_answer("s3cr3t-access-token"))
    client.token("lib-42")
    # Then no object an integrator might log shows it or the AWS secrets
    shown = " ".join(repr(o) for o in (client, client.tokens, client.auth, client.apicbase("lib-42")))
    shown += " " + repr(client.tokens._entries)
    for secret in ("s3cr3t-access-token", CREDENTIALS.secret_key, "session-token"):
        assert secret not in shown


def test_an_unreachable_api_is_a_broker_error_with_status_0():
    # Given nothing listens on the port
    with pytest.raises(BrokerError) as raised:
        BrokerClient(f"http://127.0.0.1:{free_port()}", timeout=2).connection("lib-42")
    assert (raised.value.status, raised.value.code) == (0, "unreachable")


# --- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://broker.example.com", "ftp://x", "not a url"])
def test_an_unusable_api_url_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError):
        BrokerClient(url, credentials=CREDENTIALS)


def test_the_local_run_needs_no_credentials(http):
    http.get("http://127.0.0.1:3000/connections/lib-42/token", json=token_answer("local"))
    assert BrokerClient("http://127.0.0.1:3000").token("lib-42") == "local"
    assert "Authorization" not in http.calls[0].request.headers


def test_from_stack_reads_the_api_url_from_the_outputs():
    with mock_aws():
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="broker",
            TemplateBody=json.dumps(
                {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"ApiUrl": {"Value": API}}}
            ),
        )
        client = BrokerClient.from_stack("broker", region="eu-west-1")
        with pytest.raises(ConfigurationError, match="nope"):
            BrokerClient.from_stack("nope", region="eu-west-1")
    assert client.api_url == API
    assert client.auth.region == "eu-west-1"


def test_connect_posts_only_the_options_given(client, http):
    http.post(f"{API}/connect-sessions", status=201, json={"connect_url": f"{API}/oauth/start?session=x"})
    client.connect("lib-42", scopes=["accounts", "library"], expected_username="chef@example.com")
    assert json.loads(http.calls[0].request.body) == {
        "connection_id": "lib-42",
        "scopes": ["accounts", "library"],
        "expected_username": "chef@example.com",
    }


def test_a_connection_id_is_one_path_segment(client, http):
    http.get(re.compile(rf"{re.escape(API)}/connections/.*"), json={})
    client.connection("a/b")
    assert http.calls[0].request.url == f"{API}/connections/a%2Fb"


def test_the_default_clock_is_monotonic():
    assert BrokerClient("http://127.0.0.1:3000").tokens.clock is time.monotonic


def test_requests_session_is_what_apicbase_returns(client):
    assert isinstance(client.apicbase("lib-42"), requests.Session)
