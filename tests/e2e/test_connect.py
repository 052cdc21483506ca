"""Connecting a library through the real sandbox and the real callback, over HTTP."""

from __future__ import annotations

import time

import pytest
import requests

from tests.e2e.localrun import CODE_LIFETIME_SECONDS, TIMEOUT, LocalRun, query_of

pytestmark = pytest.mark.e2e


def test_happy_path_stores_a_connection_whose_token_works_at_apicbase(local_run: LocalRun) -> None:
    # Given a connect session, and the demo user logging in and consenting at the sandbox
    connected = local_run.connect("e2e-happy")

    # Then the callback page says the library is connected
    assert connected.callback.status_code == 200
    assert "Apicbase connected" in connected.callback.text
    assert "Your Apicbase library Demo&#x27;s kitchen is connected, signed in as demo." in connected.callback.text
    # And the admin API shows the connection without its tokens, with the user's library
    view = local_run.api("GET", "/connections/e2e-happy").json()
    assert view["status"] == "active"
    assert (view["username"], view["library"]) == ("demo", "Demo's kitchen")
    assert view["scope"] == "accounts library"
    assert not {"access_token", "refresh_token"} & set(view)
    # And the token it hands out is accepted by the sandbox's API
    token = local_run.token("e2e-happy")
    me = requests.get(
        f"{local_run.sandbox_url}/api/v2/accounts/user_info/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
    assert (me.json()["username"], me.json()["scope"]) == ("demo", "accounts library")


def test_an_expired_code_gives_a_page_that_says_start_again(local_run: LocalRun) -> None:
    # Given a redirect whose code outlives the sandbox's (short) code lifetime
    location, _ = local_run.authorize("e2e-expired")
    time.sleep(CODE_LIFETIME_SECONDS + 1)

    # When the browser arrives at the callback
    page = local_run.http.get(location, timeout=TIMEOUT)

    # Then the page says what happened and to start again, and nothing is stored
    assert page.status_code == 400
    assert "Connection not completed" in page.text
    assert "has expired" in page.text
    assert "Start connecting again" in page.text
    assert local_run.api("GET", "/connections/e2e-expired").status_code == 404


def test_a_replayed_state_is_refused(local_run: LocalRun) -> None:
    # Given a callback that has completed
    connected = local_run.connect("e2e-replay")
    assert connected.callback.status_code == 200

    # When the same callback URL is opened again
    replay = local_run.http.get(connected.callback.url, timeout=TIMEOUT)

    # Then the one-time state is gone: 400, and the page says so
    assert replay.status_code == 400
    assert "expired or was already used" in replay.text


def test_cancel_on_the_consent_page_stores_nothing(local_run: LocalRun) -> None:
    # Given the demo user choosing Cancel on the sandbox's consent page
    location, _ = local_run.authorize("e2e-denied", allow=False)
    assert query_of(location)["error"] == "access_denied"

    # When the browser arrives at the callback
    page = local_run.http.get(location, timeout=TIMEOUT)

    # Then the page says access was not granted, and no connection exists
    assert page.status_code == 400
    assert "Access was not granted, so nothing was connected." in page.text
    assert local_run.api("GET", "/connections/e2e-denied").status_code == 404


def test_a_sign_in_finished_in_another_browser_is_refused(local_run: LocalRun) -> None:
    # Given a connect_url opened in one browser (local_run.http keeps its binder cookie), and the
    # sandbox's redirect back with a good code, forwarded to another browser (login CSRF)
    location, _ = local_run.authorize("e2e-other-browser")

    # When that other browser, without the cookie, arrives at the callback
    with requests.Session() as other:
        page = other.get(location, timeout=TIMEOUT)

    # Then the page says the sign-in was started elsewhere, nothing is stored, and the session is
    # used up for the browser that started it too
    assert page.status_code == 400
    assert "started in another browser" in page.text
    assert local_run.api("GET", "/connections/e2e-other-browser").status_code == 404
    assert local_run.http.get(location, timeout=TIMEOUT).status_code == 400
