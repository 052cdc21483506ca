"""Upgrades keep data: items as every earlier layout wrote them (tests/fixtures/legacy_items/, each
naming the commit) are read, served and refreshed by the current code through its handlers.

A fixture holds the item and the pair's plaintext as the old code sealed it; loading seals it the
same way in moto (KMS Encrypt of the exact bytes, or an ABE1 envelope whose data key KMS encrypts
for the connection and whose AES-GCM part is stored literally), since a KMS ciphertext only opens
in the account that made it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from boto3.dynamodb.conditions import Key
from local import template as tpl
from local.adapter import build_event, match

from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "legacy_items"
CONNECTIONS = sorted(p.name for p in FIXTURES.glob("[0-9]-*.json"))
ENVELOPE = b"ABE1"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def seal(kms: Any, key_arn: str, connection_id: str, sealed: dict[str, Any]) -> bytes:
    """The tokens attribute as the fixture's code wrote it, sealed in this account."""
    context = {"connection_id": connection_id, "purpose": "apicbase-oauth-tokens"}
    if "kms_encrypt" in sealed:
        plaintext = sealed["kms_encrypt"].encode()
        return bytes(kms.encrypt(KeyId=key_arn, Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"])
    envelope = sealed["envelope"]
    data_key = bytes.fromhex(envelope["data_key"])
    encrypted = bytes(kms.encrypt(KeyId=key_arn, Plaintext=data_key, EncryptionContext=context)["CiphertextBlob"])
    return (
        ENVELOPE + struct.pack(">H", len(encrypted)) + encrypted + bytes.fromhex(envelope["nonce"] + envelope["sealed"])
    )


def load(aws: Any, item: dict[str, Any], tokens: bytes | None = None) -> None:
    aws.table.put_item(Item={**item, **({"tokens": tokens} if tokens is not None else {})})


@pytest.fixture
def call(load_handler, deps, lambda_context, template) -> Callable[..., tuple[int, Any, dict[str, Any]]]:
    """An HTTP request through API Gateway's event to the route's real handler, on the test's clock."""
    modules: dict[str, Any] = {}
    routes = tpl.http_routes(template)

    def request(method: str, path: str, query: str = "") -> tuple[int, Any, dict[str, Any]]:
        route, parameters = match(routes, method, path) or (None, None)
        assert route is not None, path
        if route.function not in modules:
            modules[route.function] = load_handler(route.function)
            modules[route.function].DEPS = deps
        event = build_event(
            route, parameters or {}, method=method, raw_path=path, raw_query=query,
            headers=[("host", "broker.example.com")], body=b"", source_ip="203.0.113.9",
        )  # fmt: skip
        answer = modules[route.function].lambda_handler(event, lambda_context)
        body = answer.get("body") or ""
        is_json = answer.get("headers", {}).get("Content-Type") == "application/json"
        return answer["statusCode"], json.loads(body) if is_json else body, answer.get("headers", {})

    return request


@pytest.fixture
def legacy(aws, apicbase) -> Callable[[str], dict[str, Any]]:
    """Put a fixture's connection in the table, its pair live at the fake Apicbase."""
    kms = aws.session.client("kms")

    def put(name: str) -> dict[str, Any]:
        data = fixture(name)
        item, tokens = data["item"], data["tokens"]
        load(aws, item, seal(kms, aws.refs["TokenKey.Arn"], item["connection_id"], data["sealed"]))
        if item["status"] == "active":
            apicbase.grant(tokens["access_token"], tokens["refresh_token"], tokens["scope"], family=int(name[0]))
        return data

    return put


@pytest.mark.parametrize("name", CONNECTIONS)
def test_a_connection_written_by_an_earlier_layout_is_shown_as_it_was(legacy, call, name):
    # Given a connection item as that layout wrote it
    data = legacy(name)
    connection_id = data["item"]["connection_id"]
    # When the admin API describes it
    status, view, _ = call("GET", f"/connections/{connection_id}")
    # Then every field the layout had is shown as it was
    assert status == 200
    assert {k: view[k] for k in data["expect"]} == data["expect"]


@pytest.mark.parametrize("name", [n for n in CONNECTIONS if fixture(n)["item"]["status"] == "active"])
def test_an_active_connection_written_by_an_earlier_layout_gives_its_token_and_refreshes(
    legacy, call, aws, apicbase, name
):
    # Given an active connection as that layout wrote it
    data = legacy(name)
    connection_id, tokens = data["item"]["connection_id"], data["tokens"]
    # When its token is asked for, Then the stored access token opens and is served
    status, body, _ = call("GET", f"/connections/{connection_id}/token")
    assert (status, body["access_token"]) == (200, tokens["access_token"])
    # When it is refreshed
    status, view, _ = call("POST", f"/connections/{connection_id}/refresh")
    # Then Apicbase got its refresh token once, and the new pair is stored in today's layout
    assert status == 200, view
    assert view["refresh_count"] == data["item"].get("refresh_count", 0) + 1
    assert apicbase.refresh_requests == 1
    assert tokens["refresh_token"] in apicbase.rotated
    stored = aws.table.get_item(Key={"pk": f"CONN#{connection_id}"})["Item"]
    assert bytes(stored["tokens"].value).startswith(ENVELOPE)
    status, body, _ = call("GET", f"/connections/{connection_id}/token")
    assert body["access_token"] not in {tokens["access_token"], None}
    assert body["access_token"] in apicbase.access_tokens


def test_a_connection_that_needed_reauthorization_still_does(legacy, call, apicbase):
    # Given a connection an earlier layout marked needs_reauthorization
    legacy("3-first-release-needs-reauthorization.json")
    # When its token is asked for, Then the answer says so, and Apicbase is not asked
    status, body, _ = call("GET", "/connections/legacy-3/token")
    assert (status, body["error"]["code"]) == (409, "needs_reauthorization")
    assert apicbase.token_requests == 0


def test_every_earlier_layout_is_listed(legacy, call, aws):
    # Given one connection of each layout
    for name in CONNECTIONS:
        legacy(name)
    # When the connections are listed (the index projects what each layout wrote)
    status, page, _ = call("GET", "/connections", "limit=100")
    # Then each is there with its status
    assert status == 200
    listed = {c["connection_id"]: c["status"] for c in page["connections"]}
    assert listed == {fixture(n)["item"]["connection_id"]: fixture(n)["item"]["status"] for n in CONNECTIONS}
    # And the scheduler's index finds the active ones only (the reauthorization one left it)
    due = aws.table.query(IndexName="refresh-due", KeyConditionExpression=Key("refresh_queue").eq("due"))
    assert {i["connection_id"] for i in due["Items"]} == {k for k, v in listed.items() if v == "active"}


def test_a_connect_session_started_before_the_browser_binding_is_refused_cleanly(aws, call, apicbase):
    # Given a connect session in flight across the upgrade (no binder: it predates the binding)
    data = fixture("session-before-browser-binding.json")
    load(aws, data["item"])
    # When Apicbase sends its browser back to the callback
    status, page, headers = call("GET", "/oauth/callback", f"code=code-from-apicbase&state={data['state']}")
    # Then the person gets a page saying to start again (a 4xx, not an error), and nothing is stored
    assert 400 <= status < 500
    assert headers["Content-Type"].startswith("text/html")
    assert "Connection not completed" in page
    assert apicbase.token_requests == 0
    assert aws.table.get_item(Key={"pk": "CONN#legacy-7"}).get("Item") is None


def test_the_fixtures_are_what_their_layouts_wrote(template):
    # Given the fixtures, Then each names its commit and holds only attributes the table can index
    definitions = tpl.resource(template, "ConnectionsTable")["Properties"]["AttributeDefinitions"]
    key_types = {a["AttributeName"]: a["AttributeType"] for a in definitions}
    for name in [*CONNECTIONS, "session-before-browser-binding.json"]:
        data = fixture(name)
        assert data["written_by"][:7].isalnum(), name
        for attribute, kind in key_types.items():
            if attribute in data["item"]:
                assert isinstance(data["item"][attribute], str if kind == "S" else int), (name, attribute)
    assert len(CONNECTIONS) >= 6
