"""The proxy route against the sandbox's protected API (local/sandbox/api.py), through the local run:
a consumer calls Apicbase with nothing but the broker's API; the token never reaches it."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from apicbase_broker import BrokerClient
from tests.e2e.localrun import PROXY_BUDGET_PER_MINUTE, LocalRun

pytestmark = pytest.mark.e2e


def proxied(local_run: LocalRun, connection_id: str, path: str, method: str = "GET", **kwargs):  # type: ignore[no-untyped-def]
    return local_run.api(method, f"/connections/{connection_id}/apicbase/{path}", **kwargs)


def raw_request(local_run: LocalRun, method: str, target: str) -> tuple[int, dict]:
    """A request line sent as written (HTTP clients resolve dot segments before sending)."""
    parts = urlsplit(local_run.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, target)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        connection.close()


def test_the_protected_resource_answers_only_to_a_live_token(local_run: LocalRun) -> None:
    # Given the sandbox's protected resource, called directly without a token
    direct = local_run.http.get(f"{local_run.sandbox_url}/api/v1/me/", timeout=30)
    # Then it refuses, as Apicbase's API does
    assert direct.status_code == 401
    assert direct.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_proxy_answers_with_the_sandbox_s_resource(local_run: LocalRun) -> None:
    # Given a library connected in the sandbox
    local_run.connect("e2e-proxy")
    # When a consumer calls Apicbase's API through the broker
    answer = proxied(local_run, "e2e-proxy", "api/v1/me/")
    # Then the sandbox answered with the connection's user and scope
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"username": "demo", "scope": "accounts library"}
    assert answer.headers["Cache-Control"] == "no-store"


def test_method_query_body_and_content_type_pass_and_the_caller_s_secrets_do_not(local_run: LocalRun) -> None:
    local_run.connect("e2e-proxy-echo")
    # When a consumer sends a body, a query, cookies and an Authorization of its own
    answer = proxied(
        local_run,
        "e2e-proxy-echo",
        "api/v1/echo/products/42/",
        "PATCH",
        params={"page": "2", "q": "soup du jour"},
        data=b'{"name": "grandma-s-secret-soup"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer caller-own", "Cookie": "sid=x"},
    )
    # Then Apicbase got the method, path, query, body and type, with the broker's token only
    assert answer.status_code == 200, answer.text
    echo = answer.json()
    assert (echo["method"], echo["path"], echo["query"]) == (
        "PATCH",
        "/api/v1/echo/products/42/",
        "page=2&q=soup+du+jour",
    )
    assert (echo["body"], echo["content_type"]) == ('{"name": "grandma-s-secret-soup"}', "application/json")
    assert "cookie" not in echo["headers"] and "x-forwarded-for" not in echo["headers"]
    # And the body is not in the run's logs
    assert "grandma-s-secret-soup" not in local_run.log()


def test_after_the_token_stops_working_the_proxy_refreshes_once_and_still_answers(local_run: LocalRun) -> None:
    # Given a connection whose stored access token the sandbox stopped accepting (as after a
    # refresh elsewhere: DOT deletes the old access token)
    local_run.connect("e2e-proxy-401")
    first = local_run.token("e2e-proxy-401")
    deleted = proxied(local_run, "e2e-proxy-401", "api/v1/expire-this-token/", "POST")
    assert deleted.status_code == 200, deleted.text
    # When the proxy is called with it
    answer = proxied(local_run, "e2e-proxy-401", "api/v1/me/")
    # Then Apicbase's 401 made the broker refresh once and retry: the consumer saw a 200
    assert answer.status_code == 200, answer.text
    assert local_run.token("e2e-proxy-401") != first
    view = local_run.api("GET", "/connections/e2e-proxy-401").json()
    assert view["refresh_count"] == 1


def test_apicbase_s_429_is_passed_on_with_its_retry_after(local_run: LocalRun) -> None:
    local_run.connect("e2e-proxy-429")
    answer = proxied(local_run, "e2e-proxy-429", "api/v1/throttled/")
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")


def test_binary_answers_pass_and_answers_too_large_for_lambda_are_a_clear_502(local_run: LocalRun) -> None:
    local_run.connect("e2e-proxy-bytes")
    small = proxied(local_run, "e2e-proxy-bytes", "api/v1/bytes/1000/")
    assert (small.status_code, small.content) == (200, (bytes(range(256)) * 3) + bytes(1000 - 768))
    large = proxied(local_run, "e2e-proxy-bytes", "api/v1/bytes/6000000/")
    assert large.status_code == 502
    assert large.json()["error"]["code"] == "response_too_large"


@pytest.mark.parametrize(
    "path",
    [
        "api/../oauth/token/",
        "api/%2e%2e/oauth/token/",
        "%2F%2Fevil.example/x",
        "https:%2F%2Fevil.example/",
        "api%5C..%5Cx",
        "oauth/introspect/",
    ],
)
def test_bad_paths_are_refused_with_400(local_run: LocalRun, path: str) -> None:
    # (no such connection either: the path is refused before anything is read)
    status, body = raw_request(local_run, "GET", f"/connections/e2e-proxy-bad/apicbase/{path}")
    assert (status, body["error"]["code"]) == (400, "invalid_path")


def test_the_client_library_calls_apicbase_through_the_proxy(local_run: LocalRun) -> None:
    local_run.connect("e2e-proxy-client")
    api = BrokerClient(local_run.url).apicbase("e2e-proxy-client")
    answer = api.get("api/v1/me/")
    assert (answer.status_code, answer.json()["username"]) == (200, "demo")


# Last in the module: it spends the demo user's budget for the current minute.
def test_the_budget_answers_429_with_retry_after_when_spent(local_run: LocalRun) -> None:
    # Given a connection of the sandbox's user, whose budget is PROXY_BUDGET_PER_MINUTE
    local_run.connect("e2e-proxy-budget")
    # When it is called more often than that within a minute (twice over, should a minute turn)
    statuses, refused = [], None
    for _ in range(2 * PROXY_BUDGET_PER_MINUTE + 1):
        answer = proxied(local_run, "e2e-proxy-budget", "api/v1/me/")
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            refused = answer
            break
    # Then the broker answered 429 itself, with the seconds to the next minute
    assert refused is not None, statuses
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert set(statuses[:-1]) == {200}
