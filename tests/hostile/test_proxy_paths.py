"""The proxy's path and query checks against any input: a request either stays on Apicbase's API,
under its base path, with no dot segment as Apicbase will read it, or is refused (400)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from apicbase_oauth.edge import forwarding
from apicbase_oauth.errors import InvalidRequest
from tests.hostile.conftest import FIGURES
from tests.hostile.strategies import ATTACKS, examples, hostile_text

BASE = "https://api.apicbase.com/base/"
# Pieces an attacker splices into a path: separators, dots, their escapes, schemes, hosts.
PIECES = [
    "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%2F", "%5c", "\\", ":", "http:", "https://", "evil.example",
    "@evil.example", "?", "#", "%3f", "%23", "%00", "%0d%0a", "%25", "%252e%252e", "oauth", "api", "v2", "~", " ",
]  # fmt: skip
spliced = st.lists(st.sampled_from(PIECES + ATTACKS), max_size=10).map("".join)
paths = st.one_of(spliced, hostile_text)


@examples(600)
@given(raw=paths, query=st.one_of(st.just(""), hostile_text))
def test_any_path_stays_under_the_api_or_is_refused(raw: str, query: str) -> None:
    FIGURES["proxy: paths tried"] += 1
    try:
        url = forwarding.target_url(BASE, raw, query)
    except InvalidRequest as refused:
        assert refused.code == "invalid_path"
        return
    FIGURES["proxy: paths forwarded"] += 1
    parts, base = urlsplit(url), urlsplit(BASE)
    # The same scheme and host, under the base path, and nothing after the query
    assert (parts.scheme, parts.netloc, parts.fragment) == (base.scheme, base.netloc, "")
    assert parts.path.startswith(base.path)
    # As Apicbase decodes it once: no dot segment, no empty one, not its OAuth endpoints
    segments = unquote(parts.path[len(base.path) :]).split("/")
    assert not {".", ".."} & set(segments)
    assert "" not in segments[:-1]
    assert segments[0].lower() != "oauth"
    # And the query is the caller's, byte for byte
    assert parts.query == query
