"""The admin API, through its real Lambda handler and the sample events: each route's answer,
JSON errors with stable codes, and no change at all when a request is rejected."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from apicbase_oauth import connect as connect_flow
from apicbase_oauth.adapters.dynamodb import state_key
from apicbase_oauth.errors import RateLimited, TokenUnreadable
from apicbase_oauth.freshness import on_demand
from apicbase_oauth.refresh import refresh_connection
from tests import fakes
from tests.binding import open_in_browser, start_id_of, state_of
from tests.conftest import CALLBACK_URL, load_event
from tests.unit.logcapture import captured_logs
from tests.unit.refresh_support import seed

CID = "lib-42"
UNCHANGED = object()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> str:
        return self.body["error"]["code"]


Admin = Callable[..., Reply]


@pytest.fixture
def admin(load_handler, deps, lambda_context) -> Admin:
    """Send one of events/admin_*.json to the handler, adjusted: another connection id, body,
    query or path."""
    module = load_handler("ConnectionsFunction")
    module.DEPS = deps  # the test's clock and moto session

    def call(
        name: str,
        *,
        connection_id: str | None = None,
        body: Any = UNCHANGED,
        query: dict[str, str] | None = None,
        path: str | None = None,
    ) -> Reply:
        event = load_event(name)
        if connection_id is not None:
            path = event["routeKey"].split(" ", 1)[1].replace("{connection_id}", connection_id)
            event["pathParameters"] = {"connection_id": connection_id}
        if path is not None:
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
        if body is not UNCHANGED:
            text = body if isinstance(body, str) else json.dumps(body)
            # Keep the event's own encoding: API Gateway base64-encodes some bodies.
            event["body"] = base64.b64encode(text.encode()).decode() if event["isBase64Encoded"] else text
        if query is not None:
            event["queryStringParameters"] = query or None
            event["rawQueryString"] = urlencode(query)
        answer = module.lambda_handler(event, lambda_context)
        content = json.loads(answer["body"]) if answer["body"] else None
        return Reply(answer["statusCode"], answer["headers"], content)

    return call


def connect(deps, apicbase, connection_id: str = CID) -> None:
    """A connection made the usual way: a connect session, then Apicbase's callback."""
    state, binder = open_in_browser(deps, connection_id)
    connect_flow.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)


def table(deps) -> list[dict[str, Any]]:
    """The items, but for the tombstones a DELETE leaves (no tokens: see the test of them)."""
    items = deps.connections.table.scan()["Items"]
    return sorted((item for item in items if item.get("entity") != "tombstone"), key=lambda item: item["pk"])


def assert_json_error(reply: Reply, status: int, code: str) -> None:
    assert (reply.status, reply.error) == (status, code)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.body["error"]["message"]


# --- connect sessions -------------------------------------------------------------------------
def test_create_connect_session(admin, deps) -> None:
    """Given the sample request, when a connect session is created, then the answer is a
    connect_url on the callback's origin with a one-time id (neither the state nor Apicbase's
    authorize URL), and the session is stored under the state's hash."""
    reply = admin("admin_create_connect_session.json")

    connect_url = reply.body["connect_url"]
    sign_in = connect_flow.begin_sign_in(deps, start_id=start_id_of(connect_url))
    state = state_of(sign_in.authorize_url)
    item = deps.connections.table.get_item(Key={"pk": state_key(state)})["Item"]
    assert reply.status == 201
    assert reply.headers["Cache-Control"] == "no-store"
    assert (reply.body["connection_id"], reply.body["redirect_uri"]) == (CID, CALLBACK_URL)
    assert connect_url.startswith("https://broker.example.com/oauth/start?session=")
    assert not {"state", "authorize_url"} & set(reply.body)
    assert state not in json.dumps(reply.body)
    assert parse_qs(urlsplit(sign_in.authorize_url).query)["redirect_uri"] == [CALLBACK_URL]
    assert item["return_url"] == "https://integrator.example.com/apicbase/connected"
    assert state not in repr(table(deps))


# Each case: (name, body, expected code). One table and one handler serve all cases (they are
# subtests), and every case must leave the table as it found it.
BAD_SESSION_BODIES = [
    ("unknown-scope", {"connection_id": CID, "scopes": ["library", "admin"]}, "invalid_scope"),
    ("unknown-scope-string", {"connection_id": CID, "scopes": "library root"}, "invalid_scope"),
    ("scope-not-a-string", {"connection_id": CID, "scopes": [1]}, "invalid_scope"),
    ("connection-id-space", {"connection_id": "lib 42"}, "invalid_connection_id"),
    ("connection-id-path", {"connection_id": "../lib-42"}, "invalid_connection_id"),
    ("connection-id-too-long", {"connection_id": "x" * 129}, "invalid_connection_id"),
    ("connection-id-number", {"connection_id": 42}, "invalid_connection_id"),
    (
        "return-url-http",
        {"connection_id": CID, "return_url": "http://integrator.example.com/done"},
        "invalid_return_url",
    ),
    ("return-url-javascript", {"connection_id": CID, "return_url": "javascript:alert(1)"}, "invalid_return_url"),
    (
        "return-url-credentials",
        {"connection_id": CID, "return_url": "https://user:pw@integrator.example.com/"},
        "invalid_return_url",
    ),
    ("unknown-field", {"connection_id": CID, "tenant": "x"}, "unknown_field"),
    ("missing-connection-id", {"scopes": ["library"]}, "missing_field"),
    ("not-an-object", [CID], "invalid_body"),
    ("invalid-json", '{"connection_id": "lib-42"', "invalid_json"),
    ("no-body", "", "invalid_body"),
    ("unknown-application", {"connection_id": CID, "application": "staging"}, "unknown_application"),
    ("bad-application-name", {"connection_id": CID, "application": "../default"}, "invalid_application"),
    (
        "body-too-large",
        {"connection_id": CID, "return_url": "https://integrator.example.com/" + "a" * 17_000},
        "body_too_large",
    ),
]


def test_bad_connect_session_requests_are_400_and_change_nothing(admin, deps, apicbase, subtests) -> None:
    """Given an existing connection, when a connect session is asked for with a bad body, then
    the answer is a JSON 400 with a stable code and the table is exactly as before."""
    connect(deps, apicbase)

    for name, body, code in BAD_SESSION_BODIES:
        with subtests.test(name):
            before = table(deps)
            assert_json_error(admin("admin_create_connect_session.json", body=body), 400, code)
            assert table(deps) == before


# --- reading connections ---------------------------------------------------------------------------
def test_describe_shows_the_connection_but_never_its_tokens(admin, deps, apicbase) -> None:
    """Given a connection, when it is described, then status, scope, username and expiry show,
    and neither token does."""
    connect(deps, apicbase)

    reply = admin("admin_get_connection.json")

    assert reply.status == 200
    assert reply.body["connection_id"] == CID
    assert (reply.body["status"], reply.body["username"], reply.body["version"]) == ("active", "chef@example.com", 1)
    assert reply.body["expires_at"].endswith("Z")
    assert "introspection" not in reply.body
    for token in (*apicbase.access_tokens, *apicbase.issued_refresh_tokens):
        assert token not in json.dumps(reply.body)


def test_describe_with_introspection_of_an_active_token(admin, deps, apicbase) -> None:
    """Given a live token, when ?introspect=true, then Apicbase's view is included."""
    connect(deps, apicbase)

    reply = admin("admin_get_connection.json", query={"introspect": "true"})

    assert reply.status == 200
    assert reply.body["introspection"]["active"] is True
    assert reply.body["introspection"]["username"] == "chef@example.com"


def test_describe_with_introspection_of_a_revoked_token(admin, deps, apicbase) -> None:
    """Given Apicbase revoked the grant, when ?introspect=true, then active is false while the
    stored status is unchanged (introspection reports, it does not decide)."""
    connect(deps, apicbase)
    apicbase.revoke_all()

    reply = admin("admin_get_connection.json", query={"introspect": "true"})

    assert reply.body["introspection"]["active"] is False
    assert reply.body["status"] == "active"


def test_describe_with_an_unknown_introspect_flag_is_400(admin, deps, apicbase) -> None:
    connect(deps, apicbase)

    assert_json_error(admin("admin_get_connection.json", query={"introspect": "maybe"}), 400, "invalid_introspect")
    assert apicbase.introspections == 1  # the connect's only


def test_list_pages_through_connections_with_a_cursor(admin, deps, apicbase) -> None:
    """Given three connections, when they are listed two at a time, then the cursor leads to
    the third and then ends; no page shows a token."""
    for cid in ("lib-a", "lib-b", "lib-c"):
        connect(deps, apicbase, cid)

    first = admin("admin_list_connections.json", query={"limit": "2"})
    second = admin("admin_list_connections.json", query={"limit": "2", "cursor": first.body["next_cursor"]})

    assert [c["connection_id"] for c in first.body["connections"]] == ["lib-a", "lib-b"]
    assert [c["connection_id"] for c in second.body["connections"]] == ["lib-c"]
    assert second.body["next_cursor"] is None
    assert first.body["connections"][0]["status"] == "active"
    assert "access" not in json.dumps(first.body) + json.dumps(second.body)


def _cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


BAD_LIST_QUERIES = [
    ("garbage", {"cursor": "not-a-cursor!"}, "invalid_cursor"),
    (
        "state-key",
        {"cursor": _cursor({"pk": "STATE#abc", "entity": "connection", "connection_id": "lib-a"})},
        "invalid_cursor",
    ),
    (
        "pk-mismatch",
        {"cursor": _cursor({"pk": "CONN#lib-a", "entity": "connection", "connection_id": "lib-b"})},
        "invalid_cursor",
    ),
    (
        "wrong-entity",
        {"cursor": _cursor({"pk": "CONN#lib-a", "entity": "state", "connection_id": "lib-a"})},
        "invalid_cursor",
    ),
    ("not-an-object", {"cursor": _cursor(["CONN#lib-a"])}, "invalid_cursor"),
    ("too-long", {"cursor": "x" * 2000}, "invalid_cursor"),
    ("limit-zero", {"limit": "0"}, "invalid_limit"),
    ("limit-too-big", {"limit": "101"}, "invalid_limit"),
    ("limit-text", {"limit": "ten"}, "invalid_limit"),
    ("limit-empty", {"limit": ""}, "invalid_limit"),
    ("limit-superscript", {"limit": "²"}, "invalid_limit"),
    ("limit-arabic-indic", {"limit": "٣"}, "invalid_limit"),
    ("limit-fullwidth", {"limit": "\uff15"}, "invalid_limit"),
    ("limit-newline", {"limit": "5\n"}, "invalid_limit"),
]


def test_list_with_a_tampered_cursor_or_bad_limit_is_400(admin, deps, apicbase, subtests) -> None:
    """Given a cursor this API did not hand out (or a bad limit), then the answer is a JSON 400."""
    connect(deps, apicbase, "lib-a")

    for name, query, code in BAD_LIST_QUERIES:
        with subtests.test(name):
            assert_json_error(admin("admin_list_connections.json", query=query), 400, code)


# --- tokens -------------------------------------------------------------------------------------
def test_get_token_returns_a_valid_access_token_never_cached(admin, deps, apicbase) -> None:
    """Given a fresh connection, when its token is asked for, then the live access token comes
    back with its expiry and Cache-Control: no-store, and the refresh token does not."""
    connect(deps, apicbase)

    reply = admin("admin_get_token.json")

    access = next(iter(apicbase.access_tokens))
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.body["access_token"] == access
    assert (reply.body["token_type"], reply.body["expires_in"]) == ("Bearer", 604800)
    assert apicbase.issued_refresh_tokens[0] not in json.dumps(reply.body)
    assert apicbase.refresh_requests == 0


def test_get_token_of_a_connection_that_needs_reauthorization_is_409(admin, deps, apicbase) -> None:
    """Given Apicbase revoked the grant and a refresh recorded it, when a token is asked for,
    then the answer is 409 needs_reauthorization without any token and without calling Apicbase."""
    connect(deps, apicbase)
    deps.connections.mark_for_reauthorization(deps.connections.get(CID), reason="refresh_token_rejected")
    requests_before, before = apicbase.token_requests, table(deps)

    reply = admin("admin_get_token.json")

    assert_json_error(reply, 409, "needs_reauthorization")
    assert "access_token" not in reply.body
    assert apicbase.token_requests == requests_before
    assert table(deps) == before


def test_refresh_now_stores_a_new_pair(admin, deps, apicbase) -> None:
    """Given a fresh connection, when a refresh is forced, then a new pair is stored (version 2)."""
    connect(deps, apicbase)

    reply = admin("admin_refresh.json")

    pair = deps.cipher.decrypt(CID, deps.connections.get(CID).tokens)
    assert reply.status == 200
    assert (reply.body["outcome"], reply.body["version"], reply.body["refresh_count"]) == ("refreshed", 2, 1)
    assert pair.refresh_token == apicbase.issued_refresh_tokens[-1]
    assert pair.refresh_token not in json.dumps(reply.body)


# --- unknown connections and bad ids ------------------------------------------------------------------
ROUTES_WITH_ID = [
    "admin_get_connection.json",
    "admin_get_token.json",
    "admin_refresh.json",
    "admin_delete_connection.json",
]


def test_an_unknown_connection_is_404(admin, deps, apicbase, subtests) -> None:
    """Given another connection exists, when a route names one that does not, then it is a JSON
    404 and nothing changes."""
    connect(deps, apicbase)
    before = table(deps)

    for name in ROUTES_WITH_ID:
        with subtests.test(name):
            assert_json_error(admin(name, connection_id="lib-unknown"), 404, "connection_not_found")
            assert table(deps) == before


def test_a_malformed_connection_id_in_the_path_is_400(admin, deps, subtests) -> None:
    """Given a path connection id that breaks the id rules, then it is a JSON 400, nothing stored."""
    for name in [*ROUTES_WITH_ID, "admin_exchange_code.json", "admin_import_tokens.json"]:
        with subtests.test(name):
            assert_json_error(admin(name, connection_id="-" + "x" * 200), 400, "invalid_connection_id")
            assert table(deps) == []


# --- delete -------------------------------------------------------------------------------------
def test_a_percent_encoded_connection_id_means_the_same_connection(admin, deps, apicbase) -> None:
    """Given a connection whose id holds ':', when a client percent-encodes it in the path
    (API Gateway passes the raw path on), then the route still finds that connection; an
    escape that is not UTF-8 is a 400."""
    connect(deps, apicbase, connection_id="tenant:7")

    found = admin("admin_get_connection.json", path="/connections/tenant%3A7")
    garbage = admin("admin_get_connection.json", path="/connections/%ff%fe")

    assert (found.status, found.body["connection_id"]) == (200, "tenant:7")
    assert_json_error(garbage, 400, "invalid_connection_id")


def test_delete_revokes_the_refresh_token_at_apicbase_and_forgets_the_connection(admin, deps, apicbase) -> None:
    """Given a connection, when it is deleted, then its refresh token (and with it its access
    token) is revoked at Apicbase's revocation endpoint, the answer says so, and the connection
    is then unknown."""
    connect(deps, apicbase)
    refresh = apicbase.issued_refresh_tokens[-1]

    reply = admin("admin_delete_connection.json")

    assert reply.status == 200
    assert reply.body == {
        "connection_id": CID,
        "disconnected": True,
        "revoked": True,
        "revocation": "revoked",
        "revocation_error": None,
    }
    assert apicbase.revocations == 1
    assert refresh in apicbase.revoked and apicbase.live_refresh_tokens == set() and apicbase.access_tokens == {}
    assert_json_error(admin("admin_get_connection.json"), 404, "connection_not_found")
    assert_json_error(admin("admin_delete_connection.json"), 404, "connection_not_found")


def test_a_delete_leaves_a_tombstone_without_tokens_that_a_reconnect_replaces(admin, deps, apicbase, clock) -> None:
    """Given a connection, when it is deleted, then its item keeps no tokens, lease, user or scope,
    only what fences late writes (its generation, when it was deleted) until its TTL; and
    connecting again makes a new connection (a new generation, its version from 1, no TTL)."""
    connect(deps, apicbase)
    deleted = deps.connections.get(CID)

    assert admin("admin_delete_connection.json").status == 200

    [tombstone] = deps.connections.table.scan()["Items"]
    assert tombstone["entity"] == "tombstone" and tombstone["generation"] == deleted.generation
    assert not {"tokens", "version", "username", "granted_scope", "lease_owner", "refresh_queue"} & set(tombstone)
    assert tombstone["ttl"] > tombstone["deleted_at"] == int(clock())
    clock.advance(1)
    connect(deps, apicbase)
    again = deps.connections.get(CID)
    assert (again.version, again.generation != deleted.generation) == (1, True)
    assert not {"ttl", "deleted_at"} & set(deps.connections.table.scan()["Items"][0])


def test_a_failed_revocation_still_forgets_the_tokens_and_says_so(admin, deps, apicbase) -> None:
    """Given Apicbase has no revocation endpoint (it answers 404, as an undocumented endpoint
    may), when a connection is deleted, then the tokens are forgotten all the same, and the
    answer records that the grant is still live at Apicbase."""
    connect(deps, apicbase)
    apicbase.mock.replace(responses.POST, fakes.REVOKE_URL, status=404, body="<h1>Not Found</h1>")

    reply = admin("admin_delete_connection.json")

    assert reply.status == 200
    assert (reply.body["revoked"], reply.body["revocation"]) == (False, "failed")
    assert reply.body["revocation_error"] == "apicbase_rejected"
    assert table(deps) == []
    assert apicbase.issued_refresh_tokens[-1] in apicbase.live_refresh_tokens


def test_any_failure_while_revoking_is_reported_after_the_delete(admin, deps, apicbase, subtests) -> None:
    """Given the tokens cannot be read (KMS), or the revocation crashes unexpectedly, when a
    connection is deleted, then it is gone all the same and the answer (not a 500) says the
    revocation failed and why."""
    for name, failure, code in [
        ("unreadable", TokenUnreadable("the stored tokens do not decrypt"), "token_unreadable"),
        ("crash", RuntimeError("boom"), "internal_error"),
    ]:
        with subtests.test(name):
            connect(deps, apicbase)

            def failing(*args: Any, failure: Exception = failure, **kwargs: Any) -> Any:
                raise failure

            deps.cipher.decrypt = failing  # type: ignore[method-assign]
            try:
                reply = admin("admin_delete_connection.json")
            finally:
                del deps.cipher.decrypt  # the class's own method again

            assert (reply.status, reply.body["revocation"], reply.body["revocation_error"]) == (200, "failed", code)
            assert table(deps) == []


def test_without_a_revocation_endpoint_a_delete_forgets_the_tokens_and_says_not_configured(
    admin, deps, apicbase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given APICBASE_REVOKE_URL is empty, when a connection is deleted, then the tokens are
    forgotten, Apicbase is not asked, and the answer says revocation is not configured."""
    connect(deps, apicbase)
    monkeypatch.setattr(deps.apicbase, "revoke_url", None)

    reply = admin("admin_delete_connection.json")

    assert (reply.status, reply.body["revoked"], reply.body["revocation"]) == (200, False, "not_configured")
    assert apicbase.revocations == 0
    assert table(deps) == []


# --- pasted codes -------------------------------------------------------------------------------------
def test_a_pasted_code_is_exchanged_and_stored(admin, deps, apicbase) -> None:
    """Given a code a person copied from Apicbase's page, when it is posted (base64 body, as API
    Gateway may send it), then it is exchanged and the connection stored."""
    reply = admin("admin_exchange_code.json", body={"code": apicbase.issue_code()})

    assert reply.status == 201
    assert (reply.body["connection_id"], reply.body["status"], reply.body["source"]) == (CID, "active", "pasted_code")
    assert deps.connections.get(CID).username == "chef@example.com"
    assert apicbase.token_requests == 1


def test_an_expired_pasted_code_is_400_and_stores_nothing(admin, deps, apicbase) -> None:
    """Given a code that Apicbase rejects (expired or used), then it is a JSON 400 invalid_grant."""
    reply = admin("admin_exchange_code.json", body={"code": "code-from-yesterday"})

    assert_json_error(reply, 400, "invalid_grant")
    assert table(deps) == []


BAD_PASTED_CODES = [
    ("no-code", {}, "missing_field"),
    ("unknown-field", {"code": "abc", "state": "x"}, "unknown_field"),
    ("code-with-space", {"code": "has space"}, "invalid_code"),
    ("redirect-uri-http", {"code": "abc", "redirect_uri": "http://broker.example.com/cb"}, "invalid_return_url"),
]


def test_bad_pasted_code_requests_never_reach_apicbase(admin, deps, apicbase, subtests) -> None:
    """Given a bad body, when a pasted code is posted, then JSON 400, no token request, no item."""
    for name, body, code in BAD_PASTED_CODES:
        with subtests.test(name):
            assert_json_error(admin("admin_exchange_code.json", body=body), 400, code)
            assert apicbase.token_requests == 0
            assert table(deps) == []


# --- imported tokens -----------------------------------------------------------------------------------
def test_import_tokens_with_expires_in(admin, deps, apicbase, clock) -> None:
    """Given tokens obtained elsewhere and their lifetime, when imported, then they are stored
    encrypted with expires_at counted from now, and the answer does not echo them."""
    access, refresh = apicbase.issue_pair()

    reply = admin(
        "admin_import_tokens.json", body={"access_token": access, "refresh_token": refresh, "expires_in": 3600}
    )

    connection = deps.connections.get(CID)
    pair = deps.cipher.decrypt(CID, connection.tokens)
    assert reply.status == 200
    assert (pair.access_token, pair.refresh_token) == (access, refresh)
    assert connection.expires_at == int(clock()) + 3600
    assert (connection.source, connection.username) == ("import", "chef@example.com")
    assert access not in json.dumps(reply.body) and refresh not in json.dumps(reply.body)


def test_import_tokens_without_expires_in_asks_introspection(admin, deps, apicbase, clock) -> None:
    """Given no expires_in, when tokens are imported, then the expiry is Apicbase's exp."""
    access, refresh = apicbase.issue_pair()

    reply = admin("admin_import_tokens.json", body={"access_token": access, "refresh_token": refresh})

    assert reply.status == 200
    assert deps.connections.get(CID).expires_at == int(apicbase.access_tokens[access])


def test_import_of_an_inactive_token_without_expires_in_is_due_at_once(admin, deps, apicbase, clock) -> None:
    """Given an access token Apicbase no longer knows and no expires_in, when imported, then the
    connection is due for a refresh at once (the refresh token may still be good)."""
    reply = admin("admin_import_tokens.json", body={"access_token": "access-old", "refresh_token": "refresh-old"})

    assert reply.status == 200
    assert deps.connections.get(CID).expires_at == int(clock())


BAD_IMPORTS = [
    ("no-refresh-token", {"access_token": "a"}, "missing_field"),
    ("unknown-field", {"access_token": "a", "refresh_token": "r", "id_token": "x"}, "unknown_field"),
    ("token-with-space", {"access_token": "a b", "refresh_token": "r"}, "invalid_access_token"),
    ("empty-token", {"access_token": "a", "refresh_token": ""}, "invalid_refresh_token"),
    ("negative-expiry", {"access_token": "a", "refresh_token": "r", "expires_in": -5}, "invalid_expires_in"),
    ("text-expiry", {"access_token": "a", "refresh_token": "r", "expires_in": "3600"}, "invalid_expires_in"),
    (
        "unknown-application",
        {"access_token": "a", "refresh_token": "r", "application": "staging"},
        "unknown_application",
    ),
]


def test_bad_imports_are_400_and_keep_the_existing_grant(admin, deps, apicbase, subtests) -> None:
    """Given a connection, when a bad import names it, then JSON 400 and its grant is untouched."""
    connect(deps, apicbase)
    before = table(deps)

    for name, body, code in BAD_IMPORTS:
        with subtests.test(name):
            assert_json_error(admin("admin_import_tokens.json", body=body), 400, code)
            assert table(deps) == before


# --- routing and logs --------------------------------------------------------------------------------
def test_an_unknown_route_is_a_json_404(admin, subtests) -> None:
    """Given a path the admin API does not serve (the callback's included), then a JSON 404."""
    for path in ["/nope", "/connections/lib-42/tokens/extra", "/oauth/callback"]:
        with subtests.test(path):
            assert_json_error(admin("admin_list_connections.json", path=path), 404, "route_not_found")


def test_tokens_never_reach_the_logs(admin, deps, apicbase, caplog: pytest.LogCaptureFixture) -> None:
    """Given tokens imported, asked for, refreshed and introspected through the API, then no
    log line holds a token or the client secret, though the calls were logged."""
    access, refresh = apicbase.issue_pair()
    with captured_logs(caplog) as logs:
        admin("admin_import_tokens.json", body={"access_token": access, "refresh_token": refresh})
        admin("admin_get_token.json")
        admin("admin_refresh.json")
        admin("admin_get_connection.json", query={"introspect": "true"})
        admin("admin_import_tokens.json", body={"access_token": access, "refresh_token": refresh, "x": 1})
        text = logs()

    assert "connection stored" in text and "admin request failed" in text
    assert "integrator-backend" in text  # the IAM caller is on every line
    for secret in (*apicbase.issued_refresh_tokens, *apicbase.access_tokens, access, fakes.CLIENT_SECRET):
        assert secret not in text


# --- Apicbase's rate limit ------------------------------------------------------------------------
@pytest.fixture
def rate_limited(deps, apicbase, clock) -> int:
    """Given a connection due on demand whose refresh Apicbase just answered 429 (Retry-After 120)."""
    seed(deps, apicbase, CID, expires_in=120)
    apicbase.scripted.append((429, {"error": "rate_limited"}, {"Retry-After": "120"}))
    with pytest.raises(RateLimited):
        refresh_connection(deps, CID, on_demand(deps.settings))
    return apicbase.token_requests


def test_token_reads_while_apicbase_asks_to_wait_serve_the_valid_token_without_asking_it(
    admin, apicbase, rate_limited
) -> None:
    """Given Apicbase's Retry-After is running and the token is still valid, when the token is read
    again and again, then each read answers it and Apicbase is not asked again."""
    replies = [admin("admin_get_token.json", connection_id=CID) for _ in range(3)]

    assert [reply.status for reply in replies] == [200] * 3
    assert apicbase.token_requests == rate_limited


def test_a_forced_refresh_while_apicbase_asks_to_wait_passes_its_retry_after_on(
    admin, apicbase, rate_limited, clock
) -> None:
    """Given Apicbase's Retry-After is running, when a refresh is forced, then the answer is 503
    with the time Apicbase asked for (not a guess), and Apicbase is not asked."""
    clock.advance(30)

    reply = admin("admin_refresh.json", connection_id=CID)

    assert_json_error(reply, 503, "rate_limited")
    assert 60 <= int(reply.headers["Retry-After"]) <= 120
    assert apicbase.token_requests == rate_limited


def test_an_expired_token_while_apicbase_asks_to_wait_is_a_503_with_its_retry_after(
    admin, apicbase, rate_limited, clock
) -> None:
    """Given Apicbase's Retry-After is running and the token has about expired, when it is read,
    then the answer is 503 with Apicbase's Retry-After, and Apicbase is not asked."""
    clock.advance(100)

    reply = admin("admin_get_token.json", connection_id=CID)

    assert_json_error(reply, 503, "rate_limited")
    assert int(reply.headers["Retry-After"]) >= 1
    assert apicbase.token_requests == rate_limited
