from urllib.parse import parse_qs, urlsplit

from apicbase_oauth import connect, tokens
from tests.binding import start_id_of


def test_connect_then_get_token_then_refresh(deps, apicbase, clock):
    session = connect.start_connect_session(deps, "lib-1", redirect_uri=deps.settings.callback_url)
    query = parse_qs(urlsplit(session.authorize_url).query)
    assert query["state"] == [session.state]
    binder = connect.begin_sign_in(deps, start_id=start_id_of(session.connect_url)).binder
    code = apicbase.issue_code()
    result = connect.complete_callback(deps, state=session.state, code=code, error=None, binder=binder)
    assert result.connection.username == "chef@example.com"
    token = tokens.get_token(deps, "lib-1")
    assert token.access_token.startswith("access")
    clock.advance(604800 - 10)
    token2 = tokens.get_token(deps, "lib-1")
    assert token2.access_token != token.access_token
    assert apicbase.refresh_requests == 1
    pair = deps.cipher.decrypt("lib-1", deps.connections.get("lib-1").tokens)
    assert pair.refresh_token == apicbase.issued_refresh_tokens[-1]
