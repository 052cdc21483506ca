"""Connect sessions as a person's browser opens them: GET /oauth/start's use case, then the state
and the binder cookie the callback needs (the browser binding)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from apicbase_oauth import connect
from apicbase_oauth.deps import Deps


def start_id_of(connect_url: str) -> str:
    return parse_qs(urlsplit(connect_url).query)["session"][0]


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def open_in_browser(deps: Deps, connection_id: str, **fields: Any) -> tuple[str, str]:
    """A connect session whose connect_url a browser opened: (state, binder)."""
    fields.setdefault("redirect_uri", deps.settings.callback_url)
    started = connect.start_connect_session(deps, connection_id, **fields)
    sign_in = connect.begin_sign_in(deps, start_id=start_id_of(started.connect_url))
    assert state_of(sign_in.authorize_url) == started.state
    return started.state, sign_in.binder
