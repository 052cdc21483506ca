"""The admin API under hostile bodies and path parameters, through the real ConnectionsFunction."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile.conftest import FIGURES, body_json, http_event, seed_connection, table_items
from tests.hostile.strategies import examples, huge

SEEDED = "lib-seeded"
KNOWN_CODES = {
    "body_too_large",
    "connection_not_found",
    "invalid_access_token",
    "invalid_application",
    "invalid_body",
    "invalid_code",
    "invalid_connection_id",
    "invalid_expected_username",
    "invalid_expires_in",
    "invalid_json",
    "invalid_refresh_token",
    "invalid_return_url",
    "invalid_scope",
    "missing_field",
    "route_not_found",
    "unknown_field",
}

# --- path parameters ---------------------------------------------------------------------------
ID_ROUTES = [
    ("GET", "/connections/{}"),
    ("GET", "/connections/{}?introspect=true"),
    ("DELETE", "/connections/{}"),
    ("GET", "/connections/{}/token"),
    ("POST", "/connections/{}/refresh"),
    ("POST", "/connections/{}/authorization-code"),
    ("PUT", "/connections/{}/tokens"),
]
odd_ids = st.one_of(
    st.sampled_from(["", "..", ".", "a/b", "../lib-seeded", "lib-seeded/", "%2e%2e", "%2Fx", "%ff", "-x", "_x"]),
    st.sampled_from(["a" * 129, "x" * 4000, "ümlaut", "名前", "lib\x00", "lib seeded", "lib\nseeded"]),
    st.text(min_size=1, max_size=140),
    # A percent-escape means its character (the handler decodes the raw path), so an escaped
    # SEEDED ("lib%2Dseeded") is SEEDED itself, not an odd id: it is left out below.
).filter(lambda cid: unquote(cid) != SEEDED)


# --- bodies (each one invalid by construction) -------------------------------------------------
# The code and the tokens are shaped like real ones, so that the watch can tell them in a message.
CODE, ACCESS, REFRESH = "code-pasted-7Hq2x9", "access-imported-Kd81zQ", "refresh-imported-Vw53nP"
BODY_ROUTES = {
    ("POST", "/connect-sessions"): (
        {"connection_id": "lib-new"},
        {"scopes", "return_url", "application", "expected_username"},
    ),
    ("POST", f"/connections/{SEEDED}/authorization-code"): ({"code": CODE}, {"application", "redirect_uri"}),
    ("PUT", f"/connections/{SEEDED}/tokens"): (
        {"access_token": ACCESS, "refresh_token": REFRESH},
        {"expires_in", "application"},
    ),
}
wrong_types = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@st.composite
def invalid_json_bodies(draw: st.DrawFn, required: dict, optional: set[str]) -> str:
    fields = sorted({*required, *optional})
    mutation = draw(st.sampled_from(["wrong_type", "unknown_field", "missing_field", "not_object", "huge"]))
    body: object = dict(required)
    if mutation == "wrong_type":
        name = draw(st.sampled_from(fields))
        # expires_in is the one field whose right type is a number: a positive whole one is valid.
        value = draw(wrong_types.filter(lambda v: not (name == "expires_in" and _valid_expires_in(v))))
        body = {**required, name: value}
    elif mutation == "unknown_field":
        name = draw(st.text(min_size=1, max_size=30).filter(lambda n: n not in fields))
        body = {**required, name: draw(st.one_of(st.text(max_size=10), wrong_types))}
    elif mutation == "missing_field":
        dropped = draw(st.sampled_from(sorted(required)))
        body = {k: v for k, v in required.items() if k != dropped}
    elif mutation == "not_object":
        body = draw(st.one_of(st.none(), wrong_types.filter(lambda v: not isinstance(v, dict)), st.text(max_size=20)))
    else:
        body = {**required, draw(st.sampled_from(fields)): draw(huge) + "x" * 16384}
    return json.dumps(body)


@st.composite
def hostile_bodies(draw: st.DrawFn, required: dict, optional: set[str]) -> tuple[str, bool]:
    """(body, isBase64Encoded): invalid JSON objects, non-JSON text, base64 of those and of garbage."""
    kind = draw(st.sampled_from(["json", "json_base64", "text", "base64_garbage", "bad_base64"]))
    if kind == "json":
        return draw(invalid_json_bodies(required, optional)), False
    if kind == "json_base64":
        return base64.b64encode(draw(invalid_json_bodies(required, optional)).encode()).decode(), True
    if kind == "text":
        return draw(st.one_of(st.text(max_size=60).filter(lambda t: not _is_json(t)), st.just(""))), False
    if kind == "base64_garbage":
        raw = draw(st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8_json(b)))
        return base64.b64encode(raw).decode(), True
    return draw(st.sampled_from(["%%%", "not base64!", "YQ", "====", "\u00e9\u00e9"])), True


def _valid_expires_in(value: object) -> bool:
    return type(value) is int and 0 < value <= 10 * 365 * 24 * 3600


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _is_utf8_json(raw: bytes) -> bool:
    try:
        return _is_json(raw.decode())
    except UnicodeDecodeError:
        return False


@pytest.fixture
def admin(handlers, apicbase, watch):
    watch.secret_input(CODE, ACCESS, REFRESH)
    module = handlers.module("ConnectionsFunction")
    seed_connection(module.DEPS, apicbase, SEEDED, expires_in=604800)
    return module


@pytest.fixture
def unchanged(admin):
    """The table as seeded: hostile requests must leave it exactly so."""
    table = admin.DEPS.connections.table
    before = table_items(table)
    return lambda: table_items(table) == before


def _call(handlers, admin, watch, event):
    response = handlers.invoke(admin, event)
    watch.see(response["body"])
    return response, body_json(response)


@examples(120)
@given(route=st.sampled_from(ID_ROUTES), connection_id=odd_ids)
def test_odd_connection_ids_are_refused_and_change_nothing(
    handlers, admin, unchanged, apicbase, watch, route, connection_id
):
    """Given a connection id with slashes, unicode, 129+ characters, nothing, '..' or percent-escapes,
    when any route that takes an id is called with it,
    then the answer is a 400 or 404 with a known error code, Apicbase is not called and the table
    is unchanged."""
    FIGURES["admin: odd path parameters tried"] += 1
    calls = apicbase.token_requests + apicbase.introspections
    method, path = route
    response, body = _call(handlers, admin, watch, http_event(method, path.format(connection_id)))

    assert response["statusCode"] in {400, 404}
    assert body["error"]["code"] in KNOWN_CODES
    assert apicbase.token_requests + apicbase.introspections == calls
    assert unchanged()


@examples(150)
@given(data=st.data(), route=st.sampled_from(sorted(BODY_ROUTES)))
def test_hostile_bodies_are_refused_and_change_nothing(handlers, admin, unchanged, apicbase, watch, data, route):
    """Given a body of wrong JSON types, unknown or missing fields, over 16 KiB, not JSON, or base64
    (valid, invalid, or of bytes that are not UTF-8),
    when it is sent to a route that reads a body,
    then the answer is a 400 with a known error code, Apicbase is not called and the table is
    unchanged."""
    FIGURES["admin: hostile bodies tried"] += 1
    required, optional = BODY_ROUTES[route]
    body, encoded = data.draw(hostile_bodies(required, optional))
    calls = apicbase.token_requests + apicbase.introspections
    method, path = route
    event = http_event(method, path, body=body)
    event["isBase64Encoded"] = encoded
    response, answer = _call(handlers, admin, watch, event)

    assert response["statusCode"] == 400, answer
    assert answer["error"]["code"] in KNOWN_CODES
    assert apicbase.token_requests + apicbase.introspections == calls
    assert unchanged()


def test_a_pasted_code_apicbase_refuses_is_not_echoed(handlers, admin, apicbase, watch):
    """Given a code shaped like a real one that Apicbase does not know (invalid_grant),
    when it is pasted to POST /connections/{id}/authorization-code,
    then the answer is a 400 invalid_grant whose message (searched by the watch, like every
    response here) does not carry the code."""
    body = json.dumps({"code": "made-up-pasted-code-Qx4r"})
    event = http_event("POST", f"/connections/{SEEDED}/authorization-code", body=body)

    response, answer = _call(handlers, admin, watch, event)

    assert (response["statusCode"], answer["error"]["code"]) == (400, "invalid_grant")
    assert "made-up-pasted-code-Qx4r" in watch.secrets
