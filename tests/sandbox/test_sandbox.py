"""The Apicbase sandbox behaves as docs/DESIGN.md says Apicbase does.

Each test drives a real `python -m local.sandbox` subprocess over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from local.sandbox.browserless import AuthorizeError, authorize_as

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "broker-local"
CLIENT_SECRET = "local-secret-not-for-production"
# Nothing listens here: tests read the redirect's Location and never follow it.
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
WEEK_SECONDS = 604800
START_TIMEOUT_SECONDS = 30
TIMEOUT = 10


# --- running the sandbox -------------------------------------------------------------------


@dataclass
class RunningSandbox:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> int:
        """SIGTERM, as make run or a CI runner would, and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def sandbox_command(*args: str, port: int = 0) -> list[str]:
    return [
        sys.executable, "-m", "local.sandbox",
        "--host", "127.0.0.1", "--port", str(port),
        "--client-id", CLIENT_ID,
        "--redirect-uri", REDIRECT_URI,
        *args,
    ]  # fmt: skip


def sandbox_env(**switches: str) -> dict[str, str]:
    """Ours, with the client secret (never on the command line) and no switch we did not ask for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    return {**env, "SANDBOX_CLIENT_SECRET": CLIENT_SECRET, **switches}


def start_sandbox(workdir: Path, *args: str, env: dict[str, str] | None = None) -> RunningSandbox:
    """Start the sandbox on a port the OS picks (no race) and wait for its "listening" line."""
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / "sandbox.stderr"
    # stderr goes to a file: a pipe nobody reads would fill up and block the server.
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            sandbox_command(*args),
            cwd=REPO_ROOT,
            env=env or sandbox_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_SECONDS)
    line = process.stdout.readline() if ready else ""
    prefix = "sandbox listening on "
    if not line.startswith(prefix):
        process.kill()
        process.wait()
        process.stdout.close()
        pytest.fail(f"sandbox did not start: {line!r}\n{stderr_path.read_text()}")
    return RunningSandbox(process, line.removeprefix(prefix).strip())


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """The sandbox with default lifetimes and the test hooks on."""
    workdir = tmp_path_factory.mktemp("sandbox")
    running = start_sandbox(workdir, "--test-hooks", "--data-dir", str(workdir / "data"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def short_code_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """A sandbox whose codes live one second and whose rotated refresh tokens are honoured for
    a minute (the grace period, set by its environment variable), started without test hooks."""
    workdir = tmp_path_factory.mktemp("short-code-sandbox")
    running = start_sandbox(workdir, "--code-lifetime", "1", env=sandbox_env(SANDBOX_GRACE_PERIOD="60"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """The sandbox at its strictest: reuse protection on, and the test hooks to switch the rest."""
    running = start_sandbox(tmp_path_factory.mktemp("strict-sandbox"), "--test-hooks", "--reuse-protection")
    yield running
    running.stop()


# --- the client's side of the flow ---------------------------------------------------------


def authorize_url(base: str, state: str, scope: str = "library inventory", **extra: str) -> str:
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "scope": scope,
        "state": state,
        "redirect_uri": REDIRECT_URI,
        **extra,
    }
    return f"{base}/oauth/authorize/?{urlencode(query)}"


def redirect_query(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT_URI
    return {key: values[0] for key, values in parse_qs(parts.query).items()}


def new_code(base: str, state: str = "state-1", **extra: str) -> str:
    return redirect_query(authorize_as(base, authorize_url(base, state, **extra)))["code"]


def exchange(base: str, code: str, secret: str = CLIENT_SECRET, **extra: str) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        "client_secret": secret,
        **extra,
    }
    return requests.post(f"{base}/oauth/token/", data=form, timeout=TIMEOUT)


def refresh(base: str, refresh_token: str) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return requests.post(f"{base}/oauth/token/", data=form, timeout=TIMEOUT)


def introspect(base: str, token: str, secret: str = CLIENT_SECRET) -> requests.Response:
    form = {"token": token, "client_id": CLIENT_ID, "client_secret": secret}
    return requests.post(f"{base}/oauth/introspect/", data=form, timeout=TIMEOUT)


def new_tokens(base: str) -> dict[str, Any]:
    response = exchange(base, new_code(base))
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def logged_in_session(base: str) -> requests.Session:
    """Log in as demo the way a browser does: login page, CSRF token, form post."""
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=TIMEOUT)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text
    form = {"csrfmiddlewaretoken": match.group(1), "username": "demo", "password": "demo"}
    login = session.post(f"{base}/accounts/login/", data=form, allow_redirects=False, timeout=TIMEOUT)
    assert login.status_code == 302
    return session


# --- login and consent ---------------------------------------------------------------------


def test_login_page_is_a_plain_sandbox_form(sandbox: RunningSandbox) -> None:
    # When a person opens the login page
    page = requests.get(f"{sandbox.url}/accounts/login/", timeout=TIMEOUT)

    # Then it is the sandbox's own small form
    assert page.status_code == 200
    assert "<h1>Apicbase sandbox</h1>" in page.text
    assert 'name="username"' in page.text
    assert 'type="password"' in page.text
    assert ">Log in</button>" in page.text


def test_authorize_without_login_redirects_to_login(sandbox: RunningSandbox) -> None:
    # When an anonymous browser opens the authorize URL
    response = requests.get(authorize_url(sandbox.url, "s"), allow_redirects=False, timeout=TIMEOUT)

    # Then it is sent to the login page, and back afterwards
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/accounts/login/?next=/oauth/authorize/")


def test_consent_page_names_application_and_scopes(sandbox: RunningSandbox) -> None:
    # Given demo is logged in
    session = logged_in_session(sandbox.url)

    # When it opens the authorize URL for library and inventory
    page = session.get(authorize_url(sandbox.url, "s"), timeout=TIMEOUT)

    # Then the consent page shows the application, both scopes with descriptions, and both buttons
    assert page.status_code == 200
    assert "Authorize Apicbase OAuth Broker (local)?" in page.text
    assert "<dt>library</dt>" in page.text
    assert "<dt>inventory</dt>" in page.text
    assert "<dt>sales</dt>" not in page.text
    assert "ingredients, recipes and menus" in page.text
    assert ">Authorize</button>" in page.text
    assert ">Cancel</button>" in page.text


def test_allow_redirects_with_code_and_state(sandbox: RunningSandbox) -> None:
    # When demo logs in and allows access
    location = authorize_as(sandbox.url, authorize_url(sandbox.url, "state-allow"))

    # Then the browser goes to the redirect URI with a code and the state
    query = redirect_query(location)
    assert query["state"] == "state-allow"
    assert query["code"]


def test_cancel_redirects_with_access_denied_and_state(sandbox: RunningSandbox) -> None:
    # When demo logs in and cancels
    location = authorize_as(sandbox.url, authorize_url(sandbox.url, "state-cancel"), allow=False)

    # Then the browser goes to the redirect URI with access_denied and the state, and no code
    assert redirect_query(location) == {"error": "access_denied", "state": "state-cancel"}


def test_unknown_scope_redirects_with_invalid_scope(sandbox: RunningSandbox) -> None:
    # When the authorize URL asks for a scope Apicbase does not have
    location = authorize_as(sandbox.url, authorize_url(sandbox.url, "state-scope", scope="library recipes"))

    # Then the browser goes back with invalid_scope before any consent
    query = redirect_query(location)
    assert query["error"] == "invalid_scope"
    assert query["state"] == "state-scope"


def test_unregistered_redirect_uri_is_refused_on_the_page(sandbox: RunningSandbox) -> None:
    # Given an authorize URL with a redirect URI the application does not have
    url = authorize_url(sandbox.url, "s").replace("127.0.0.1%3A9", "evil.example")

    # When demo logs in and opens it
    # Then the sandbox shows an error instead of redirecting anywhere
    with pytest.raises(AuthorizeError, match="HTTP 400"):
        authorize_as(sandbox.url, url)


def test_wrong_password_fails_the_login(sandbox: RunningSandbox) -> None:
    # When the helper logs in with a wrong password
    # Then it says so instead of returning a redirect
    with pytest.raises(AuthorizeError, match="login as 'demo' failed"):
        authorize_as(sandbox.url, authorize_url(sandbox.url, "s"), password="wrong")


# --- token endpoint ------------------------------------------------------------------------


def test_code_exchange_returns_apicbase_token_response(sandbox: RunningSandbox) -> None:
    # Given a fresh code
    code = new_code(sandbox.url)

    # When the client exchanges it with its credentials in the form body
    response = exchange(sandbox.url, code)

    # Then it gets Apicbase's token response
    assert response.status_code == 200
    body = response.json()
    assert body["access_token"]
    assert body["refresh_token"]
    assert body["expires_in"] == WEEK_SECONDS
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "library inventory"


def test_reused_code_gives_invalid_grant(sandbox: RunningSandbox) -> None:
    # Given a code that was exchanged once
    code = new_code(sandbox.url)
    assert exchange(sandbox.url, code).status_code == 200

    # When it is exchanged again
    response = exchange(sandbox.url, code)

    # Then the answer is 400 invalid_grant
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_expired_code_gives_invalid_grant(short_code_sandbox: RunningSandbox) -> None:
    # Given a code from a sandbox whose codes live one second, left for two
    code = new_code(short_code_sandbox.url)
    time.sleep(2)

    # When it is exchanged
    response = exchange(short_code_sandbox.url, code)

    # Then the answer is 400 invalid_grant
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_wrong_client_secret_gives_invalid_client(sandbox: RunningSandbox) -> None:
    # When a code is exchanged with a wrong secret
    response = exchange(sandbox.url, new_code(sandbox.url), secret="wrong")

    # Then the answer is 401 invalid_client
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_refresh_rotates_the_refresh_token(sandbox: RunningSandbox) -> None:
    # Given a token pair
    first = new_tokens(sandbox.url)

    # When it is refreshed
    response = refresh(sandbox.url, first["refresh_token"])

    # Then a new pair comes back and the old refresh token no longer works
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == WEEK_SECONDS
    assert second["scope"] == "library inventory"
    again = refresh(sandbox.url, first["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_pkce_is_accepted_when_sent(sandbox: RunningSandbox) -> None:
    # Given a code requested with an S256 challenge
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code = new_code(sandbox.url, code_challenge=challenge, code_challenge_method="S256")

    # When it is exchanged with the verifier
    response = exchange(sandbox.url, code, code_verifier=verifier)

    # Then tokens come back
    assert response.status_code == 200


# --- introspection and the protected API ---------------------------------------------------


def test_introspection_describes_a_live_token(sandbox: RunningSandbox) -> None:
    # Given a live access token
    tokens = new_tokens(sandbox.url)

    # When the client introspects it with its credentials in the body
    response = introspect(sandbox.url, tokens["access_token"])

    # Then it is active, with scope, expiry, client and user
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["scope"] == "library inventory"
    assert body["client_id"] == CLIENT_ID
    assert body["username"] == "demo"
    assert abs(body["exp"] - (time.time() + WEEK_SECONDS)) < 60


def test_introspection_of_an_unknown_token_is_inactive(sandbox: RunningSandbox) -> None:
    # When the client introspects a token the sandbox never issued
    response = introspect(sandbox.url, "not-a-token")

    # Then the answer is just inactive
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspection_with_wrong_secret_gives_invalid_client(sandbox: RunningSandbox) -> None:
    # When a client introspects with a wrong secret
    response = introspect(sandbox.url, "anything", secret="wrong")

    # Then the answer is 401 invalid_client
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


def test_user_info_answers_with_a_valid_token(sandbox: RunningSandbox) -> None:
    # Given a live access token
    tokens = new_tokens(sandbox.url)

    # When the protected API is called with it
    response = requests.get(
        f"{sandbox.url}/api/v2/accounts/user_info/",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=TIMEOUT,
    )

    # Then it tells who, what scope and which library
    assert response.status_code == 200
    assert response.json() == {
        "username": "demo",
        "scope": "library inventory",
        "active_library": {"id": response.json()["active_library"]["id"], "name": "Demo's kitchen"},
    }


def test_user_info_refuses_an_invalid_token(sandbox: RunningSandbox) -> None:
    # When the protected API is called with a token the sandbox never issued
    response = requests.get(
        f"{sandbox.url}/api/v2/accounts/user_info/",
        headers={"Authorization": "Bearer not-a-token"},
        timeout=TIMEOUT,
    )

    # Then the answer is a 401 in JSON
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


# --- test hooks ----------------------------------------------------------------------------


def stats(base: str) -> dict[str, int]:
    response = requests.get(f"{base}/sandbox/stats/", timeout=TIMEOUT)
    assert response.status_code == 200
    counts: dict[str, int] = response.json()
    return counts


def test_stats_count_token_refresh_and_introspection_requests(sandbox: RunningSandbox) -> None:
    # Given the counts so far
    before = stats(sandbox.url)

    # When the client exchanges a code, refreshes once and introspects once
    tokens = new_tokens(sandbox.url)
    assert refresh(sandbox.url, tokens["refresh_token"]).status_code == 200
    introspect(sandbox.url, tokens["access_token"])

    # Then two token requests (one a refresh) and one introspection were counted
    after = stats(sandbox.url)
    assert {name: after[name] - before[name] for name in after} == {
        "token_requests": 2,
        "refresh_requests": 1,
        "introspections": 1,
        "revocations": 0,
        "reused_refresh_tokens": 0,
        "throttled": 0,
        "api_requests": 0,
    }


def test_revoke_hook_withdraws_the_demo_users_tokens(sandbox: RunningSandbox) -> None:
    # Given a token pair
    tokens = new_tokens(sandbox.url)

    # When the sandbox revokes demo's tokens
    assert requests.post(f"{sandbox.url}/sandbox/revoke/", timeout=TIMEOUT).status_code == 200

    # Then the access token is inactive and the refresh token gives invalid_grant
    assert introspect(sandbox.url, tokens["access_token"]).json() == {"active": False}
    response = refresh(sandbox.url, tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_expire_hook_makes_access_tokens_inactive(sandbox: RunningSandbox) -> None:
    # Given a live access token
    tokens = new_tokens(sandbox.url)

    # When the sandbox expires all access tokens
    assert requests.post(f"{sandbox.url}/sandbox/expire-access-tokens/", timeout=TIMEOUT).status_code == 200

    # Then introspection says inactive
    assert introspect(sandbox.url, tokens["access_token"]).json() == {"active": False}


def test_expired_access_token_can_still_be_refreshed(sandbox: RunningSandbox) -> None:
    # Given a token pair whose access token expired
    tokens = new_tokens(sandbox.url)
    requests.post(f"{sandbox.url}/sandbox/expire-access-tokens/", timeout=TIMEOUT)

    # When it is refreshed
    response = refresh(sandbox.url, tokens["refresh_token"])

    # Then a new, active access token comes back
    assert response.status_code == 200
    assert introspect(sandbox.url, response.json()["access_token"]).json()["active"] is True


def test_test_hooks_are_absent_without_the_flag(short_code_sandbox: RunningSandbox) -> None:
    # When the hooks are called on a sandbox started without --test-hooks
    revoke = requests.post(f"{short_code_sandbox.url}/sandbox/revoke/", timeout=TIMEOUT)
    counts = requests.get(f"{short_code_sandbox.url}/sandbox/stats/", timeout=TIMEOUT)
    expire = requests.post(f"{short_code_sandbox.url}/sandbox/expire-access-tokens/", timeout=TIMEOUT)

    switches = requests.post(f"{short_code_sandbox.url}/sandbox/switches/", json={"odd_2xx": True}, timeout=TIMEOUT)

    # Then they do not exist
    assert (revoke.status_code, counts.status_code, expire.status_code, switches.status_code) == (404,) * 4


# --- switches: Apicbase at its worst --------------------------------------------------------


@pytest.fixture
def switch(strict_sandbox: RunningSandbox) -> Iterator[Any]:
    """Change live switches of the strict sandbox for one test; all off again afterwards."""

    def change(**values: Any) -> dict[str, Any]:
        response = requests.post(f"{strict_sandbox.url}/sandbox/switches/", json=values, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        return dict(response.json())

    yield change
    change(token_delay=0, odd_2xx=False, rate_limit=0)


def test_reuse_protection_revokes_the_family_when_a_used_refresh_token_comes_back(
    strict_sandbox: RunningSandbox,
) -> None:
    # Given a pair refreshed once, so its first refresh token is used
    first = new_tokens(strict_sandbox.url)
    second = refresh(strict_sandbox.url, first["refresh_token"]).json()
    before = stats(strict_sandbox.url)

    # When the used refresh token is presented again
    replay = refresh(strict_sandbox.url, first["refresh_token"])

    # Then it is refused, counted as a reuse, and the live pair is revoked too
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert stats(strict_sandbox.url)["reused_refresh_tokens"] == before["reused_refresh_tokens"] + 1
    assert introspect(strict_sandbox.url, second["access_token"]).json() == {"active": False}
    assert refresh(strict_sandbox.url, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_the_grace_period_honours_a_rotated_refresh_token(short_code_sandbox: RunningSandbox) -> None:
    # Given a pair refreshed once
    first = new_tokens(short_code_sandbox.url)
    assert refresh(short_code_sandbox.url, first["refresh_token"]).status_code == 200

    # When its rotated refresh token is presented again within the grace period
    again = refresh(short_code_sandbox.url, first["refresh_token"])

    # Then it still works
    assert again.status_code == 200, again.text
    assert again.json()["access_token"]


def test_a_delayed_answer_comes_after_the_rotation(strict_sandbox: RunningSandbox, switch: Any) -> None:
    # Given a pair, and a token endpoint that answers two seconds late
    tokens = new_tokens(strict_sandbox.url)
    switch(token_delay=2)

    # When a refresh gives up waiting after half a second
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{strict_sandbox.url}/oauth/token/", data=form, timeout=(5, 0.5))

    # Then the refresh happened all the same: the old access token is gone (the witness)
    assert introspect(strict_sandbox.url, tokens["access_token"]).json() == {"active": False}


def test_an_odd_2xx_has_no_expires_in(strict_sandbox: RunningSandbox, switch: Any) -> None:
    # Given a pair, and a token endpoint that leaves expires_in out
    tokens = new_tokens(strict_sandbox.url)
    switch(odd_2xx=True)

    # When it is refreshed
    response = refresh(strict_sandbox.url, tokens["refresh_token"])

    # Then the answer is a 200 with a new pair and no expires_in
    assert response.status_code == 200
    body = response.json()
    assert "expires_in" not in body
    assert body["access_token"] != tokens["access_token"]
    assert introspect(strict_sandbox.url, body["access_token"]).json()["active"] is True


def test_the_rate_limit_answers_429_with_retry_after_per_user(strict_sandbox: RunningSandbox, switch: Any) -> None:
    # Given a live token of demo, and a limit of three requests a minute
    tokens = new_tokens(strict_sandbox.url)
    assert switch(rate_limit=3)["rate_limit"] == 3
    before = stats(strict_sandbox.url)

    # When demo's token is used four times (introspection and the API count for its user)
    answers = [introspect(strict_sandbox.url, tokens["access_token"]) for _ in range(2)]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    answers += [
        requests.get(f"{strict_sandbox.url}/api/v2/accounts/user_info/", headers=bearer, timeout=TIMEOUT)
        for _ in range(2)
    ]

    # Then the fourth is refused with 429 and a Retry-After within the minute, and counted
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert stats(strict_sandbox.url)["throttled"] == before["throttled"] + 1


def test_the_token_endpoint_is_rate_limited_per_client(strict_sandbox: RunningSandbox, switch: Any) -> None:
    # Given a limit of two requests a minute
    switch(rate_limit=2)

    # When the client calls the token endpoint three times
    answers = [refresh(strict_sandbox.url, "not-a-token") for _ in range(3)]

    # Then the third is refused before it is looked at
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[-1].headers["Retry-After"].isdigit()


def test_the_revocation_endpoint_revokes_a_refresh_token(strict_sandbox: RunningSandbox) -> None:
    # Given a pair
    tokens = new_tokens(strict_sandbox.url)
    before = stats(strict_sandbox.url)

    # When the client revokes its refresh token (RFC 7009, credentials in the body)
    form = {
        "token": tokens["refresh_token"],
        "token_type_hint": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    response = requests.post(f"{strict_sandbox.url}/oauth/revoke_token/", data=form, timeout=TIMEOUT)

    # Then it is revoked: counted, and refused as a grant
    assert response.status_code == 200
    assert stats(strict_sandbox.url)["revocations"] == before["revocations"] + 1
    assert refresh(strict_sandbox.url, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_switches_that_are_django_settings_cannot_change_while_running(strict_sandbox: RunningSandbox) -> None:
    # When a test asks a running sandbox to drop reuse protection, or sends nonsense
    url = f"{strict_sandbox.url}/sandbox/switches/"
    settings = requests.post(url, json={"reuse_protection": False}, timeout=TIMEOUT)
    nonsense = requests.post(url, json={"rate_limit": "many"}, timeout=TIMEOUT)

    # Then both are refused with the reason, and the switches are what they were
    assert settings.status_code == 400
    assert "reuse_protection" in settings.json()["error"]
    assert nonsense.status_code == 400
    current = requests.get(url, timeout=TIMEOUT).json()
    assert current == {"reuse_protection": True, "grace_period": 0, "token_delay": 0, "odd_2xx": False, "rate_limit": 0}


# --- the process ---------------------------------------------------------------------------


def test_restart_on_the_same_data_dir_keeps_client_and_tokens(tmp_path: Path) -> None:
    # Given a sandbox that issued tokens and was stopped
    data_dir = str(tmp_path / "data")
    first = start_sandbox(tmp_path / "first", "--data-dir", data_dir)
    tokens = new_tokens(first.url)
    first.stop()

    # When a sandbox starts again on the same data directory
    second = start_sandbox(tmp_path / "second", "--data-dir", data_dir)
    try:
        # Then the plain client secret still works and the old token is still active
        response = introspect(second.url, tokens["access_token"])
        assert response.status_code == 200
        assert response.json()["active"] is True
    finally:
        second.stop()


def test_sigterm_stops_the_sandbox_cleanly(tmp_path: Path) -> None:
    # Given a running sandbox
    running = start_sandbox(tmp_path)

    # When it gets SIGTERM
    exit_code = running.stop()

    # Then it exits with 0
    assert exit_code == 0


def test_a_bad_switch_in_the_environment_exits_with_2_and_one_line() -> None:
    # When the sandbox starts with a rate limit that is not a number
    result = subprocess.run(
        sandbox_command(),
        check=False,
        cwd=REPO_ROOT,
        env=sandbox_env(SANDBOX_RATE_LIMIT="lots"),
        capture_output=True,
        text=True,
        timeout=30,
    )

    # Then one line names the variable
    assert result.returncode == 2
    assert result.stderr == "sandbox: SANDBOX_RATE_LIMIT must be a number, not 'lots'\n"


def test_port_in_use_exits_with_2_and_one_line(tmp_path: Path) -> None:
    # Given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When the sandbox is started on it
        result = subprocess.run(
            sandbox_command(port=port),
            check=False,
            cwd=REPO_ROOT,
            env=sandbox_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    # Then it exits with 2 and one clear line, no traceback
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter: Django settings are process-global."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_python_interface_serves_until_stopped() -> None:
    # When a program starts a Sandbox, calls it, and stops it
    result = run_python(
        f"""
        import requests
        from local.sandbox import Sandbox

        sandbox = Sandbox("127.0.0.1", 0, "id", "secret", {REDIRECT_URI!r})
        sandbox.start()
        answer = requests.post(sandbox.url + "/oauth/introspect/",
                               data={{"token": "x", "client_id": "id", "client_secret": "secret"}})
        print(answer.json())
        sandbox.stop()
        try:
            requests.get(sandbox.url, timeout=2)
        except requests.ConnectionError:
            print("stopped")
        """
    )

    # Then it answered while started and not after
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["{'active': False}", "stopped"]


def test_python_interface_refuses_a_second_django_configuration() -> None:
    # Given a process whose Django settings are already configured
    # When it starts a Sandbox
    result = run_python(
        f"""
        from django.conf import settings
        from local.sandbox import Sandbox

        settings.configure()
        try:
            Sandbox("127.0.0.1", 0, "id", "secret", {REDIRECT_URI!r}).start()
        except RuntimeError as error:
            print(error)
        """
    )

    # Then it says why, instead of serving with someone else's settings
    assert result.returncode == 0, result.stderr
    assert "one Sandbox per process" in result.stdout
