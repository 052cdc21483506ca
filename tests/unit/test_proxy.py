"""ANY /connections/{id}/apicbase/{proxy+}: Apicbase's API through the broker, via the real handler
(moto, the fake Apicbase, and a fake data API on responses)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from apicbase_oauth import connect as connect_flow
from apicbase_oauth import proxy, tokens
from apicbase_oauth.adapters.budget import budget_key
from apicbase_oauth.edge import forwarding
from apicbase_oauth.errors import InvalidRequest
from tests.binding import open_in_browser
from tests.conftest import load_event
from tests.unit.logcapture import captured_logs

CID = "lib-42"
API = "https://api.apicbase.com/"
ROUTE_KEY = "ANY /connections/{connection_id}/apicbase/{proxy+}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
def call(load_handler, deps, lambda_context) -> Callable[..., Reply]:
    module = load_handler("ConnectionsFunction")
    module.DEPS = deps  # the test's clock and moto session
    module.PROXY = proxy.build(deps)

    def send(
        path: str = "api/v2/products/recipes/",
        *,
        method: str = "GET",
        query: str = "",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        connection_id: str = CID,
    ) -> Reply:
        event = load_event("admin_proxy_apicbase.json")
        raw_path = f"/connections/{connection_id}/apicbase/{path}"
        event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
        event["requestContext"]["http"]["method"] = method
        event["rawQueryString"] = query
        event["headers"].update(headers or {})
        if body is not None:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        answer = module.lambda_handler(event, lambda_context)
        raw = answer["body"]
        content = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
        return Reply(answer["statusCode"], answer["headers"], content)

    send.module = module  # type: ignore[attr-defined]
    return send


def connect(deps, apicbase, connection_id: str = CID) -> str:
    """Connected the usual way (the callback introspects: the user is known); the access token."""
    state, binder = open_in_browser(deps, connection_id)
    connect_flow.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    return deps.cipher.decrypt(connection_id, deps.connections.get(connection_id).tokens).access_token


# --- the path ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "query", "url"),
    [
        ("api/v2/products/", "", API + "api/v2/products/"),
        ("api/v2/products/42", "page=2&q=a%20b", API + "api/v2/products/42?page=2&q=a%20b"),
        ("api/v2/a%20b/", "", API + "api/v2/a%20b/"),
        ("api/v2/%252e%252e/", "", API + "api/v2/%252e%252e/"),  # decoded once: '%2e%2e', sent as is
        ("api/v2/x%3Fy%23z", "", API + "api/v2/x%3Fy%23z"),
        ("api/v2/caf%C3%A9", "", API + "api/v2/caf%C3%A9"),
    ],
)
def test_a_path_of_the_api_is_joined_under_its_base(raw: str, query: str, url: str) -> None:
    assert forwarding.target_url(API, raw, query) == url
    local = forwarding.target_url("http://127.0.0.1:8000/base/", raw, "")
    assert local == "http://127.0.0.1:8000/base/" + url[len(API) :].split("?", maxsplit=1)[0]


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        "api/../oauth/token/",
        "api/%2e%2e/x",
        "api/%2E%2E%2Fx",
        "api/./x",
        "/etc/passwd",
        "%2F%2Fevil.example/x",
        "/evil.example/x",
        "http:/evil.example/",
        "https:%2F%2Fevil.example/",
        "api\\x",
        "api%5Cx",
        "api%00x",
        "api%0D%0AHost:%20evil",
        "api//x",
        "oauth/token/",
        "OAuth/revoke_token/",
        "%ff",
        "",
    ],
)
def test_bad_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        forwarding.target_url(API, raw, "")
    assert refused.value.code == "invalid_path"


@pytest.mark.parametrize("query", ["a=b c", "a=\r\nb", "a=#b", "a=é"])
def test_a_query_string_with_raw_characters_is_refused(query: str) -> None:
    with pytest.raises(InvalidRequest):
        forwarding.target_url(API, "api/", query)


# --- forwarding -------------------------------------------------------------------------------
def test_a_request_reaches_apicbase_with_the_connection_s_token_and_safe_headers_only(
    call, deps, apicbase, data_api
) -> None:
    # Given a connected library
    access = connect(deps, apicbase)
    # When a consumer calls the proxy with a query, cookies, its signature and hop-by-hop headers
    reply = call(
        query="page=2&search=soup%20du%20jour",
        headers={"if-none-match": '"v0"', "x-amz-target": "x", "connection": "Upgrade", "upgrade": "h2c"},
    )
    # Then Apicbase answered it with the stored token, and only safe headers passed either way
    assert reply.status == 200, reply.body
    echo = reply.json()
    assert (echo["method"], echo["path"], echo["query"]) == (
        "GET",
        "/api/v2/products/recipes/",
        "page=2&search=soup%20du%20jour",
    )
    assert data_api.seen[0].headers["Authorization"] == f"Bearer {access}"
    assert data_api.seen[0].headers["Accept-Language"] == "nl"
    assert data_api.seen[0].headers["Connection"] == "keep-alive"  # ours to Apicbase, not the caller's
    refused = {"cookie", "upgrade", "x-amz-date", "x-amz-target", "x-amz-content-sha256", "x-amzn-trace-id"}
    assert not refused & set(echo["headers"])
    assert not {"x-forwarded-for", "x-forwarded-proto", "user-agent-of-caller"} & set(echo["headers"])
    assert {"if-none-match", "accept", "authorization"} <= set(echo["headers"])
    assert reply.headers["ETag"] == '"v1"'
    assert reply.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in reply.headers


def test_a_body_and_its_content_type_are_forwarded_as_bytes(call, deps, apicbase, data_api) -> None:
    connect(deps, apicbase)
    reply = call(method="POST", body=b'{"name": "Soup"}', headers={"content-type": "application/json"})
    assert reply.status == 200
    assert reply.json()["body"] == '{"name": "Soup"}'
    assert data_api.seen[0].headers["Content-Type"] == "application/json"


def test_a_binary_answer_goes_back_base64_encoded(call, deps, apicbase, data_api) -> None:
    connect(deps, apicbase)
    image = bytes(range(256)) * 10
    data_api.scripted.append((200, {"Content-Type": "image/png"}, image))
    reply = call("api/v2/media/1/")
    assert (reply.status, reply.body, reply.headers["Content-Type"]) == (200, image, "image/png")


def test_an_answer_too_large_for_lambda_is_a_clear_502(call, deps, apicbase, data_api) -> None:
    connect(deps, apicbase)
    data_api.scripted.append((200, {"Content-Type": "application/octet-stream"}, b"x" * 4_000_000))
    reply = call()
    assert reply.status == 502
    assert reply.json()["error"]["code"] == "response_too_large"


def test_a_bad_path_is_a_400_before_any_aws_or_apicbase_call(call, data_api) -> None:
    reply = call("api/%2e%2e/oauth/token/")
    assert (reply.status, reply.json()["error"]["code"]) == (400, "invalid_path")
    assert data_api.seen == []


def test_an_unknown_connection_is_a_404(call, data_api) -> None:
    reply = call(connection_id="lib-nobody")
    assert (reply.status, reply.json()["error"]["code"]) == (404, "connection_not_found")
    assert data_api.seen == []


# --- 401: refresh once, retry once -------------------------------------------------------------
def test_a_401_refreshes_once_and_retries_with_the_new_token(call, deps, apicbase, data_api, capsys) -> None:
    # Given a stored token that Apicbase deleted (a refresh elsewhere, as DOT does)
    access = connect(deps, apicbase)
    data_api.dead.add(access)
    # When the proxy is called
    reply = call()
    # Then it refreshed once and the retry, with the new token, answered
    assert reply.status == 200
    assert apicbase.refresh_requests == 1
    tokens_sent = [r.headers["Authorization"] for r in data_api.seen]
    assert tokens_sent[0] == f"Bearer {access}" and tokens_sent[1] != tokens_sent[0] and len(tokens_sent) == 2
    assert '"ProxyRetriedAfter401":[1.0]' in capsys.readouterr().out  # the metric, flushed by the handler


def test_a_second_401_is_passed_on_after_one_refresh(call, deps, apicbase, data_api) -> None:
    connect(deps, apicbase)
    data_api.scripted += [(401, {"Content-Type": "application/json"}, b'{"detail": "no"}')] * 3
    reply = call()
    assert reply.status == 401
    assert apicbase.refresh_requests == 1
    assert len(data_api.seen) == 2


def test_a_path_that_always_answers_401_costs_one_rotation_not_one_per_call(call, deps, apicbase, data_api) -> None:
    # Given a connected library, and a path Apicbase answers 401 to whatever the token
    connect(deps, apicbase)
    data_api.scripted += [(401, {"Content-Type": "application/json"}, b'{"detail": "no"}')] * 30
    # When it is called ten times through the proxy
    statuses = [call().status for _ in range(10)]
    # Then every 401 is passed on, and only the first call refreshed: the token it got was refused
    # too, so Apicbase refuses the resource, not the token
    assert statuses == [401] * 10
    assert apicbase.refresh_requests == 1
    assert len(data_api.seen) == 11
    # And a consumer reporting that token as rejected does not rotate it either
    token = deps.cipher.decrypt(CID, deps.connections.get(CID).tokens).access_token
    assert tokens.replace_rejected_token(deps, CID, token).access_token == token
    assert apicbase.refresh_requests == 1


def test_a_refused_token_is_refreshed_for_a_401_again_after_a_while(call, deps, apicbase, data_api, clock) -> None:
    # Given a token Apicbase refused right after a refresh for a 401
    connect(deps, apicbase)
    data_api.scripted += [(401, {"Content-Type": "application/json"}, b'{"detail": "no"}')] * 30
    call()
    # When its 401s go on past the guard's time
    clock.advance(tokens.REFUSED_TOKEN_SECONDS + 1)
    call()
    # Then one more refresh is tried (a token revoked elsewhere is not stuck for good)
    assert apicbase.refresh_requests == 2


# --- 429 and the budget ------------------------------------------------------------------------
def test_a_connection_that_needs_reauthorization_spends_no_budget(call, deps, apicbase, data_api, clock) -> None:
    # Given a connection whose grant is gone
    connect(deps, apicbase)
    connection = deps.connections.get(CID)
    deps.connections.mark_for_reauthorization(connection, reason="refresh_token_rejected")
    # When it is called through the proxy
    reply = call()
    # Then the answer is 409, Apicbase saw nothing, and its user's budget is untouched
    assert (reply.status, reply.json()["error"]["code"]) == (409, "needs_reauthorization")
    assert data_api.seen == []
    key = budget_key(f"user:{apicbase.username}", int(clock() // 60))
    assert "Item" not in deps.connections.table.get_item(Key={"pk": key})


def test_apicbase_s_own_429_gives_its_budget_unit_back(call, deps, apicbase, data_api, clock) -> None:
    # Given Apicbase answering 429 to a call the budget let through
    connect(deps, apicbase)
    data_api.scripted.append((429, {"Content-Type": "application/json", "Retry-After": "5"}, b"{}"))
    key = budget_key(f"user:{apicbase.username}", int(clock() // 60))
    # When it is called, then called again once Apicbase serves
    assert call().status == 429
    assert deps.connections.table.get_item(Key={"pk": key})["Item"]["count"] == 0
    assert call().status == 200
    # Then only the request Apicbase served cost a unit
    assert deps.connections.table.get_item(Key={"pk": key})["Item"]["count"] == 1


def test_the_caller_s_host_header_never_reaches_apicbase(call, deps, apicbase, data_api) -> None:
    # Given a caller that sends a Host header of its own (API Gateway's, or a forged one)
    connect(deps, apicbase)
    # When it calls through the proxy
    reply = call(headers={"host": "evil.example", "x-forwarded-host": "evil.example"})
    # Then Apicbase's request names no host but the one its URL has
    assert reply.status == 200
    assert not {"host", "x-forwarded-host"} & set(reply.json()["headers"])


# --- 429 and the budget ------------------------------------------------------------------------
def test_apicbase_s_429_is_passed_on_with_its_retry_after(call, deps, apicbase, data_api) -> None:
    connect(deps, apicbase)
    data_api.scripted.append((429, {"Content-Type": "application/json", "Retry-After": "17"}, b"{}"))
    reply = call()
    assert (reply.status, reply.headers["Retry-After"]) == (429, "17")


def test_the_budget_answers_429_itself_until_the_next_minute(call, deps, apicbase, data_api, clock, capsys) -> None:
    # Given a budget of 3 per minute, 20 seconds into a minute
    call.module.PROXY.budget.per_minute = 3
    clock.value = (clock.value // 60) * 60 + 20
    connect(deps, apicbase)
    # When a fourth call comes within the minute
    replies = [call() for _ in range(4)]
    # Then the broker answered it 429 itself, with the seconds to the next minute, and Apicbase saw 3
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert replies[3].headers["Retry-After"] == "40"
    assert replies[3].json()["error"]["code"] == "rate_limited"
    assert len(data_api.seen) == 3
    assert '"ProxyOverBudget":[1.0]' in capsys.readouterr().out
    # And in the next minute the budget is whole again
    clock.advance(40)
    assert call().status == 200


def test_connections_of_one_apicbase_user_share_a_budget(call, deps, apicbase, data_api) -> None:
    call.module.PROXY.budget.per_minute = 2
    connect(deps, apicbase, "lib-a")
    connect(deps, apicbase, "lib-b")  # the same Apicbase user (the fake's)
    statuses = [call(connection_id=cid).status for cid in ("lib-a", "lib-b", "lib-b")]
    assert statuses == [200, 200, 429]


def test_the_budget_item_expires_and_stays_out_of_the_connections_index(call, deps, apicbase, data_api, clock) -> None:
    connect(deps, apicbase)
    call()
    minute = int(clock() // 60)
    item = deps.connections.table.get_item(Key={"pk": budget_key(f"user:{apicbase.username}", minute)})["Item"]
    assert item["count"] == 1
    assert minute * 60 < item["ttl"] <= minute * 60 + 600
    assert "entity" not in item
    assert apicbase.username not in item["pk"]


# --- cost and secrecy ----------------------------------------------------------------------------
def test_a_warm_call_reads_the_connection_once_and_writes_the_budget_once(call, deps, apicbase, data_api, aws) -> None:
    made: list[str] = []
    # Clients copy the session's events when they are built: listen before the first call.
    aws.session.events.register(
        "before-call", lambda model, **_: made.append(f"{model.service_model.service_name}:{model.name}")
    )
    connect(deps, apicbase)
    call()  # cold: clients built
    made.clear()
    reply = call()
    assert reply.status == 200
    assert [m for m in made if m.startswith("dynamodb:")] == ["dynamodb:GetItem", "dynamodb:UpdateItem"]


def test_bodies_and_tokens_are_never_logged(call, deps, apicbase, data_api, caplog) -> None:
    access = connect(deps, apicbase)
    data_api.dead.add(access)
    with captured_logs(caplog) as logs:
        call(method="POST", body=b'{"secret-recipe": "grandma"}', headers={"content-type": "application/json"})
        text = logs()
    assert "proxied to Apicbase" in text
    newer = deps.cipher.decrypt(CID, deps.connections.get(CID).tokens).access_token
    assert [s for s in (access, newer, "secret-recipe", "grandma", "soup") if s in text] == []


def test_the_route_is_dispatched_by_its_route_key() -> None:
    assert load_event("admin_proxy_apicbase.json")["routeKey"] == ROUTE_KEY


def test_a_header_value_that_could_split_a_line_is_dropped() -> None:
    headers = forwarding.forwarded_headers({"Accept": "application/json\r\nX-Evil: 1", "Content-Type": "text/plain"})
    assert headers == {"content-type": "text/plain"}


def test_a_token_about_to_expire_is_refreshed_before_the_call_and_stored(call, deps, apicbase, data_api, clock) -> None:
    # Given a connection whose token expires within the leeway (the read served once to get_token)
    access = connect(deps, apicbase)
    clock.advance(604800 - 60)
    # When the proxy is called
    reply = call()
    # Then the token was refreshed first (single flight, stored), and Apicbase saw only the new one
    stored = deps.cipher.decrypt(CID, deps.connections.get(CID).tokens)
    assert reply.status == 200
    assert apicbase.refresh_requests == 1
    assert [r.headers["Authorization"] for r in data_api.seen] == [f"Bearer {stored.access_token}"]
    assert stored.access_token != access and stored.refresh_token == apicbase.issued_refresh_tokens[-1]
