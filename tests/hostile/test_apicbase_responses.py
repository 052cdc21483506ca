"""Whatever Apicbase answers to a code exchange or a refresh is classified, and nothing is
stored half. The oracle below is written from docs/DESIGN.md's facts, independently of the parser."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from apicbase_oauth import connect
from apicbase_oauth.errors import BrokerError
from apicbase_oauth.freshness import REJECTED
from apicbase_oauth.model import Grant, TokenPair
from apicbase_oauth.observability import metrics
from apicbase_oauth.refresh import refresh_connection
from tests.binding import open_in_browser
from tests.hostile.conftest import FIGURES, connection_items, seed_connection, stored_pair
from tests.hostile.strategies import examples

# Printable ASCII but space, '"' and '\\' (RFC 6750's Bearer tokens are narrower still), at most
# 8,192 characters: a parked pair of the longest fits one SQS message.
TOKEN_CHARS = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
MAX_TOKEN = 8192
TEN_YEARS = 10 * 365 * 24 * 3600
_serial = itertools.count()

STATUSES = st.sampled_from([100, 102, 199, 200, 201, 202, 204, 206, 299, 301, 302, 303, 304, 307, 308])
STATUSES = STATUSES | st.sampled_from([400, 401, 403, 404, 405, 409, 418, 422, 429, 499, 500, 502, 503, 504, 599])


def _token(prefix: str) -> st.SearchStrategy[Any]:
    """Tokens: well formed, enormous, with spaces or newlines, wrong types (each string one is
    registered as a secret by the tests)."""
    ok = st.builds(
        lambda n, tail: f"{prefix}{n}{tail}", st.builds(lambda: next(_serial)), st.text("abcXYZ09-._~", min_size=8)
    )
    return st.one_of(
        ok,
        ok,
        st.builds(lambda t, n: (t + "x" * n)[:n], ok, st.sampled_from([1000, 2041, 5000, 8192, 8193, 20000])),
        st.builds(lambda t, bad: t[:5] + bad + t[5:], ok, st.sampled_from([" ", "\n", "\t", "é", '"', "\\"])),
        st.one_of(st.integers(), st.none(), st.just(""), st.lists(st.text(max_size=3), max_size=2)),
    )


expires = st.one_of(
    st.just(604800),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, -1, 1, TEN_YEARS, TEN_YEARS + 1, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["604800", "3600", "-5", "1e3", "²", "١٢", "9" * 5000, "", " 60", "soon"]),
    st.booleans(),
    st.none(),
)


@st.composite
def token_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": draw(_token("AT")),
        "refresh_token": draw(_token("RT")),
        "expires_in": draw(expires),
        "token_type": draw(st.sampled_from(["Bearer", "bearer", "BEARER", "mac", "", None, 3])),
        "scope": draw(st.one_of(st.just("accounts library"), st.none(), st.integers(), st.text(min_size=500))),
    }
    for name in draw(st.sets(st.sampled_from(sorted(body)))):
        del body[name]
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=10), st.integers() | st.text(max_size=10))))
    return body


Answer = tuple[int, str, dict[str, str], list[Any]]


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """(status, body text, headers, the tokens in the body) as Apicbase (or something in front
    of it) might answer."""
    body = draw(token_bodies())
    tokens = [body.get("access_token"), body.get("refresh_token")]
    text = json.dumps(body)
    kind = draw(st.sampled_from(["json", "json", "json", "html", "empty", "truncated", "array", "error"]))
    if kind == "html":
        text = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    elif kind == "empty":
        text = ""
    elif kind == "truncated":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif kind == "array":
        text = json.dumps([body])
    elif kind == "error":
        text = json.dumps({"error": draw(st.sampled_from(["invalid_grant", "invalid_client", "<script>", "x" * 100]))})
    headers = draw(st.sampled_from([{}, {"Retry-After": "30"}, {"Retry-After": "²"}, {"Retry-After": "9" * 400}]))
    return draw(STATUSES), text, headers, tokens


def _answer(status: int = 200, headers: dict[str, str] | None = None, **fields: Any) -> Answer:
    body = {"access_token": "AT0-known-access", "refresh_token": "RT0-known-refresh", "expires_in": 604800, **fields}
    return status, json.dumps(body), headers or {}, [body["access_token"], body["refresh_token"]]


# The edges a random search rarely reaches, always tried.
EDGES = [
    _answer(expires_in="\u00b2"),  # a digit to str.isdigit(), not to int()
    _answer(expires_in="9" * 5000),  # beyond int()'s digit limit
    _answer(access_token="AT1" + "a" * 8189, refresh_token="RT1" + "r" * 8189),  # both at the length limit
    _answer(access_token="AT3" + "a" * 8190),  # one past it: kept as unusable beside its refresh token
    _answer(refresh_token="RT4" + "r" * 8190),  # a refresh token past it: an unknown outcome
    _answer(access_token="AT4" + "a" * 2038),  # past the limit of KMS Encrypt, before envelopes
    _answer(access_token="AT5 with a space"),  # an odd access token: kept as unusable
    _answer(refresh_token="RT5 with a space"),  # an odd refresh token: an unknown outcome
    _answer(access_token="AT2" + '"' * 2000, refresh_token="RT2" + "\\" * 2000),  # characters JSON escapes
    _answer(429, {"Retry-After": "\u00b2"}),
    _answer(429, {"Retry-After": "9" * 400}),
    # Apicbase refusing the code or the refresh token, or the client: the message must not carry them.
    (400, json.dumps({"error": "invalid_grant"}), {}, []),
    (401, json.dumps({"error": "invalid_client"}), {}, []),
]


def with_edges(test):
    for edge in EDGES:
        test = example(answer=edge)(test)
    return test


def _valid_token(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN and bool(TOKEN_CHARS.match(value))


def usable(status: int, text: str, *, grant: str) -> dict[str, Any] | None:
    """The pair the broker must store, as a token response (the access token "" when it is not
    usable), or None: the oracle."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    # A 204 or 205 carries no content in HTTP: urllib3 refuses the body, whatever it holds.
    if not 200 <= status < 300 or status in (204, 205) or not isinstance(body, dict):
        return None
    refresh, access = body.get("refresh_token"), body.get("access_token")
    if refresh in (None, ""):
        # No refresh token: a refresh keeps the one it presented (RFC 6749 6) when the access token
        # is usable; a code exchange has nothing to keep.
        return body if grant == "refresh_token" and _valid_token(access) else None
    if not _valid_token(refresh):
        return None  # Apicbase may have rotated: an unknown outcome, never a stored guess
    # A usable refresh token is kept whatever else is odd (the access token, expires_in,
    # token_type, scope): a rotated refresh token must never be discarded.
    return {**body, "access_token": access if _valid_token(access) else ""}


def _code() -> str:
    """A code of its own per example (the fake registers each code presented to it as a secret)."""
    return f"code-{next(_serial)}-exchanged"


@examples(40)
@with_edges
@given(answer=answers())
def test_code_exchange_answers_are_classified_and_store_nothing_unless_usable(deps, apicbase, watch, answer):
    """Given any status class and body from Apicbase's token endpoint,
    when a callback with a valid state exchanges its code,
    then either the answer was usable and exactly its pair is stored, or a BrokerError is raised
    and no connection exists."""
    FIGURES["apicbase: token answers tried (code exchange)"] += 1
    status, text, headers, tokens = answer
    watch.secret_input(*tokens)
    apicbase.scripted.clear()
    metrics.clear_metrics()  # the handlers' decorator flushes these; here 100 examples would overflow them
    state, binder = open_in_browser(deps, "lib-x")
    apicbase.scripted.append((status, text, headers))
    expected = usable(status, text, grant="authorization_code")
    outcome = connect.complete_callback(deps, state=state, code=_code(), error=None, binder=binder)
    if outcome.error is not None:
        exc = outcome.error
        watch.see(exc.message, str(exc))
        assert expected is None, f"a usable answer was refused: {exc.code}"
        assert connection_items(deps.connections.table) == []
        return
    assert expected is not None, "an unusable answer was accepted"
    assert stored_pair(deps, "lib-x") == TokenPair(expected["access_token"], expected["refresh_token"])
    deps.connections.forget("lib-x")


@pytest.fixture
def old_pair(deps, apicbase) -> tuple[TokenPair, bytes]:
    pair = seed_connection(deps, apicbase, "lib-r", expires_in=60)
    return pair, deps.connections.get("lib-r").tokens


@examples(40)
@with_edges
@given(answer=answers())
def test_refresh_answers_are_classified_and_keep_the_old_pair_unless_usable(deps, apicbase, watch, old_pair, answer):
    """Given any status class and body from Apicbase's token endpoint,
    when a connection is refreshed,
    then either the answer was usable and the new pair is stored (the old refresh token kept if
    none came), or a BrokerError is raised and the stored ciphertext still decrypts to the old pair."""
    FIGURES["apicbase: token answers tried (refresh)"] += 1
    status, text, headers, tokens = answer
    watch.secret_input(*tokens)
    apicbase.scripted.clear()
    metrics.clear_metrics()  # the handlers' decorator flushes these; here 100 examples would overflow them
    pair, ciphertext = old_pair
    connection = deps.connections.get("lib-r")
    deps.connections.save_grant(
        Grant(
            connection_id="lib-r",
            application=connection.application,
            client_id=connection.client_id,
            tokens=ciphertext,
            expires_at=connection.expires_at,
            scope=None,
            username=None,
            source="import",
        )
    )
    apicbase.scripted.append((status, text, headers))
    expected = usable(status, text, grant="refresh_token")
    try:
        refresh_connection(deps, "lib-r", REJECTED)
    except BrokerError as exc:
        watch.see(exc.message, str(exc))
        assert expected is None, f"a usable answer was refused: {exc.code}"
        assert stored_pair(deps, "lib-r") == pair
        assert deps.connections.get("lib-r").lease_owner is None
        return
    assert expected is not None, "an unusable answer was accepted"
    assert stored_pair(deps, "lib-r") == TokenPair(
        expected["access_token"], expected.get("refresh_token") or pair.refresh_token
    )
