"""Every pattern is matched whole, and every number is ASCII digits.

``re.match(...$)`` accepts a trailing newline (the admin API once created connection
``'lib-1\\n'``), and ``str.isdigit`` accepts '²', '٣' and fullwidth digits (``?limit=²`` once
answered 500). Here every value a request carries (path ids on every admin route, body fields,
query parameters, and on the public routes the state, the code, the start id and the binder
cookie) is sent valid but for whitespace or invisible characters around it, and every number
with digits that are not ASCII: each must be a 4xx that changes nothing and calls Apicbase not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apicbase_oauth import connect
from apicbase_oauth.adapters.dynamodb import connection_key, encode_cursor
from apicbase_oauth.edge import pages
from tests.binding import open_in_browser, start_id_of
from tests.hostile.conftest import FIGURES, body_json, connection_items, http_event, seed_connection, table_items
from tests.hostile.strategies import examples

SEEDED = "lib-seeded"
# Whitespace, line breaks and invisible characters: ASCII, C0/C1 controls and Unicode's own.
PADDING = ["\n", "\r\n", "\r", "\t", " ", "\x0b", "\x0c", "\x00", "\x1f", "\x85", "\xa0", "\u2028", "\u2029", "\u3000"]
PADDING += ["\ufeff", "\u200b"]
paddings = st.one_of(
    # What re.match(...$) lets through, drawn often: a single trailing line break.
    st.sampled_from([("\n", "after"), ("\r\n", "after"), (" ", "after"), ("\t", "before")]),
    st.tuples(
        st.lists(st.sampled_from(PADDING), min_size=1, max_size=3).map("".join),
        st.sampled_from(["after", "before", "both"]),
    ),
)
# Numbers that str.isdigit (or int) accepts, or that look like numbers, but are not ASCII digits.
# (escaped: superscripts, Arabic-Indic, Devanagari, Bengali, Thai, fullwidth, vulgar fraction,
# Roman numeral, mathematical bold, NKo, Mongolian)
NOT_ASCII_DIGITS = ["\u00b2", "\u00b3", "\u00b9", "\u0663", "\u06f5", "\u0967", "\u09e7", "\u0e53"]
NOT_ASCII_DIGITS += ["\uff11\uff10", "\uff15", "\u2075", "\u00bd", "\u216b", "\U0001d7d3", "\u07c2", "\u1811"]
NOT_ASCII_DIGITS += ["5\n", " 5", "5 ", "+5", "-5", "5.0", "0x5", "1_0", "1e1", "\u0665\u0660", "5\u00b2"]
not_ascii_digits = st.one_of(
    st.sampled_from(NOT_ASCII_DIGITS),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=4).filter(lambda t: not t.isascii()),
)


def pad(value: str, padding: tuple[str, str]) -> str:
    chars, where = padding
    return {"after": value + chars, "before": chars + value, "both": chars + value + chars}[where]


# --- where a value goes in an admin request --------------------------------------------------------
ID_ROUTES = [
    ("GET", "/connections/{}"),
    ("DELETE", "/connections/{}"),
    ("GET", "/connections/{}/token"),
    ("POST", "/connections/{}/refresh"),
    ("POST", "/connections/{}/authorization-code"),
    ("PUT", "/connections/{}/tokens"),
]
# (method, path, the valid body, the field whose value is padded)
BODY_FIELDS = [
    ("POST", "/connect-sessions", {"connection_id": "lib-new"}, "connection_id"),
    ("POST", "/connect-sessions", {"connection_id": "lib-new", "application": "default"}, "application"),
    ("POST", "/connect-sessions", {"connection_id": "lib-new", "return_url": "https://i.example/done"}, "return_url"),
    ("POST", "/connect-sessions", {"connection_id": "lib-new", "expected_username": "chef"}, "expected_username"),
    ("POST", f"/connections/{SEEDED}/authorization-code", {"code": "code000001"}, "code"),
    ("POST", f"/connections/{SEEDED}/authorization-code", {"code": "c1", "application": "default"}, "application"),
    (
        "POST",
        f"/connections/{SEEDED}/authorization-code",
        {"code": "code000001", "redirect_uri": "https://broker.example.com/oauth/callback"},
        "redirect_uri",
    ),
    ("PUT", f"/connections/{SEEDED}/tokens", {"access_token": "a" * 20, "refresh_token": "r" * 20}, "access_token"),
    ("PUT", f"/connections/{SEEDED}/tokens", {"access_token": "a" * 20, "refresh_token": "r" * 20}, "refresh_token"),
    (
        "PUT",
        f"/connections/{SEEDED}/tokens",
        {"access_token": "a" * 20, "refresh_token": "r" * 20, "application": "default"},
        "application",
    ),
]
CURSOR = encode_cursor({"pk": connection_key(SEEDED), "entity": "connection", "connection_id": SEEDED})
# (method, path, the query parameter, its valid value)
QUERY_FIELDS = [
    ("GET", "/connections", "limit", "5"),
    ("GET", "/connections", "cursor", CURSOR),
    ("GET", f"/connections/{SEEDED}", "introspect", "true"),
]


@dataclass
class Admin:
    handlers: Any
    module: Any
    apicbase: Any
    watch: Any

    def calls_to_apicbase(self) -> int:
        return self.apicbase.token_requests + self.apicbase.introspections + self.apicbase.revocations

    def refused_and_unchanged(self, event: dict[str, Any], codes: set[str]) -> dict[str, Any]:
        """Send the event: a 4xx with one of ``codes`` (refused on the value's shape, not, say,
        "not found" after a lookup), Apicbase not called, the table as it was."""
        table = self.module.DEPS.connections.table
        before, calls = table_items(table), self.calls_to_apicbase()
        response = self.handlers.invoke(self.module, event)
        self.watch.see(response["body"])
        answer = body_json(response)
        assert 400 <= response["statusCode"] < 500, answer
        assert answer["error"]["code"] in codes, answer
        assert self.calls_to_apicbase() == calls
        assert table_items(table) == before
        return answer


@pytest.fixture
def admin(handlers, apicbase, watch) -> Admin:
    module = handlers.module("ConnectionsFunction")
    seed_connection(module.DEPS, apicbase, SEEDED, expires_in=604800)
    return Admin(handlers, module, apicbase, watch)


def _admin_event(method: str, path: str, *, query: list[tuple[str, str]] | None = None, body: Any = None) -> dict:
    return http_event(method, path, query=query, body=None if body is None else json.dumps(body))


@examples(160)
@given(data=st.data(), padding=paddings, place=st.sampled_from(["path", "path_raw", "body", "query"]))
def test_padded_values_are_refused_by_every_admin_route(admin, data, padding, place):
    """Given a valid id, code, token, application, URL, username, cursor, limit or flag with
    whitespace, a line break or an invisible character before or after it,
    when it is sent where it belongs on any admin route (percent-encoded in the path, or raw),
    then the answer is a 4xx with a known code, Apicbase is not called, and the table is unchanged:
    'lib-seeded\\n' is neither a new connection nor the seeded one."""
    FIGURES["whole match: padded values tried (admin)"] += 1
    if place in ("path", "path_raw"):
        method, template = data.draw(st.sampled_from(ID_ROUTES))
        value = pad(SEEDED, padding)
        event = _admin_event(method, template.format(quote(value, safe="") if place == "path" else value))
        codes = {"invalid_connection_id", "route_not_found"}
    elif place == "body":
        method, path, body, field = data.draw(st.sampled_from(BODY_FIELDS))
        event = _admin_event(method, path, body={**body, field: pad(str(body[field]), padding)})
        codes = {"invalid_return_url" if field.endswith("_url") or field == "redirect_uri" else f"invalid_{field}"}
    else:
        method, path, name, value = data.draw(st.sampled_from(QUERY_FIELDS))
        event = _admin_event(method, path, query=[(name, pad(value, padding))])
        codes = {f"invalid_{name}"}

    admin.refused_and_unchanged(event, codes)


@examples(80)
@given(data=st.data(), number=not_ascii_digits)
def test_numbers_are_ascii_digits_only(admin, data, number):
    """Given a number written with digits that are not ASCII (superscript two, Arabic-Indic three,
    fullwidth ten, mathematical bold five),
    or ASCII digits with a sign, a space, a point or an underscore,
    when it is sent as ?limit, as ?introspect, or as expires_in (as a string, which is never a
    number here),
    then the answer is a 400 naming the field, nothing changes, and Apicbase is not called."""
    FIGURES["whole match: non-ASCII numbers tried"] += 1
    where = data.draw(st.sampled_from(["limit", "introspect", "expires_in"]))
    if where == "limit":
        event = _admin_event("GET", "/connections", query=[("limit", number)])
    elif where == "introspect":
        event = _admin_event("GET", f"/connections/{SEEDED}", query=[("introspect", number)])
    else:
        body = {"access_token": "a" * 20, "refresh_token": "r" * 20, "expires_in": number}
        event = _admin_event("PUT", f"/connections/{SEEDED}/tokens", body=body)

    admin.refused_and_unchanged(event, {f"invalid_{where}"})


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(_admin_event(m, p.format(SEEDED)), id=f"{m} {p}")
        for m, p in ID_ROUTES
        if m == "GET" or p.endswith("refresh")
    ]
    + [pytest.param(_admin_event("GET", "/connections", query=[(n, v)]), id=n) for _, p, n, v in QUERY_FIELDS[:2]]
    + [pytest.param(_admin_event("GET", f"/connections/{SEEDED}", query=[("introspect", "true")]), id="introspect")]
    + [pytest.param(_admin_event("POST", "/connect-sessions", body=b), id=f) for m, p, b, f in BODY_FIELDS[:4]]
    + [pytest.param(_admin_event("PUT", p, body=b), id=f"tokens-{f}") for m, p, b, f in BODY_FIELDS[7:]],
)
def test_the_same_values_unpadded_are_accepted(admin, event):
    """Given the valid values the properties above pad (so they cannot pass by refusing
    everything), when sent as they are, then they are accepted (2xx)."""
    response = admin.handlers.invoke(admin.module, event)  # (GET /token answers a token: not watched)

    assert 200 <= response["statusCode"] < 300, response["statusCode"]


# --- the public routes: state, code, start id, binder cookie ---------------------------------------
@dataclass
class Public:
    handlers: Any
    module: Any
    apicbase: Any
    watch: Any

    def get(self, path: str, query: list[tuple[str, str]], cookies: list[str] | None = None) -> dict[str, Any]:
        response = self.handlers.invoke(self.module, http_event("GET", path, query=query, cookies=cookies))
        self.watch.see(response["body"], response["headers"].get("Location"))
        return response


@pytest.fixture
def public(handlers, apicbase, watch) -> Public:
    return Public(handlers, handlers.module("CallbackFunction"), apicbase, watch)


Request = tuple[str, list[tuple[str, str]], list[str] | None]


def _bound(public: Public) -> tuple[str, str, str]:
    """A session whose connect_url a browser opened: its state, the binder, and a good code."""
    state, binder = open_in_browser(public.module.DEPS, "lib-public")
    return state, binder, public.apicbase.issue_code()


def _state(public: Public, padding: tuple[str, str]) -> Request:
    state, binder, code = _bound(public)
    return "/oauth/callback", [("code", code), ("state", pad(state, padding))], [f"{pages.BINDER_COOKIE}={binder}"]


def _code(public: Public, padding: tuple[str, str]) -> Request:
    state, binder, code = _bound(public)
    return "/oauth/callback", [("code", pad(code, padding)), ("state", state)], [f"{pages.BINDER_COOKIE}={binder}"]


def _binder(public: Public, padding: tuple[str, str]) -> Request:
    state, binder, code = _bound(public)
    return "/oauth/callback", [("code", code), ("state", state)], [f"{pages.BINDER_COOKIE}={pad(binder, padding)}"]


def _start_id(public: Public, padding: tuple[str, str]) -> Request:
    started = connect.start_connect_session(
        public.module.DEPS, "lib-public", redirect_uri=public.module.DEPS.settings.callback_url
    )
    return "/oauth/start", [("session", pad(start_id_of(started.connect_url), padding))], None


# Each place, and whether the value is refused on its shape before any write (the session
# then stays unused); a padded code or cookie comes with a good state, which is used up.
PLACES: dict[str, tuple[Callable[[Public, tuple[str, str]], Request], bool]] = {
    "state": (_state, True),
    "code": (_code, False),
    "binder cookie": (_binder, False),
    "start id": (_start_id, True),
}


@examples(100)
@given(place=st.sampled_from(sorted(PLACES)), padding=paddings)
def test_padded_states_codes_start_ids_and_binders_are_refused(public, place, padding):
    """Given a live session and a browser holding its binder cookie, with the state, the code, the
    connect_url's start id or the cookie's value padded with whitespace or invisible characters,
    when the public route is called with it,
    then the answer is a 400 page, no cookie is set, Apicbase's token endpoint is never called and
    no connection is stored; a padded state or start id does not even use up the session."""
    FIGURES["whole match: padded values tried (callback and start)"] += 1
    prepare, refused_on_shape = PLACES[place]
    path, query, cookies = prepare(public, padding)
    table = public.module.DEPS.connections.table
    before, tokens_before = table_items(table), public.apicbase.token_requests

    response = public.get(path, query, cookies)

    assert response["statusCode"] == 400
    assert not [c for c in response.get("cookies", []) if "Max-Age=0" not in c]
    assert public.apicbase.token_requests == tokens_before
    assert connection_items(table) == []
    if refused_on_shape:
        assert table_items(table) == before
