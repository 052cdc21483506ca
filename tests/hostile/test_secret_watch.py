"""The secrets watch that every test in this folder runs under must be able to see a leak."""

from apicbase_oauth.edge import pages
from apicbase_oauth.observability import logger
from tests.binding import open_in_browser
from tests.hostile.conftest import http_event
from tests.hostile.test_callback_fuzz import register_codes_and_states


def test_the_watch_sees_a_secret_logged_by_the_broker(watch):
    """Given a value registered as a secret,
    when the broker's logger writes it,
    then the watch captures the line and reports the leak (the secret is then forgotten, so this
    deliberate leak does not fail the teardown check)."""
    watch.secret("refresh-deliberately-leaked-42")
    logger.info("oops", token="refresh-deliberately-leaked-42")

    assert watch.leaks(watch.log_lines)

    watch.secrets.discard("refresh-deliberately-leaked-42")


def test_the_watch_sees_a_secret_in_an_error_message(watch):
    """Given a value registered as a secret, when an exception message carries it, then it is a leak."""
    watch.secret("code-deliberately-leaked-42")

    assert watch.leaks([str(ValueError("bad code code-deliberately-leaked-42"))])

    watch.secrets.discard("code-deliberately-leaked-42")


def test_a_fuzzed_code_shown_on_the_callback_page_would_be_a_leak(handlers, apicbase, watch):
    """Given a callback with a real state and a code the fuzzer made up (Apicbase answers
    invalid_grant), registered as the callback fuzzer registers its inputs,
    when the page is searched, then it holds no secret, and the same page with the code in its
    message is a leak (so a message that quoted the code would fail the fuzzer's teardown)."""
    module = handlers.module("CallbackFunction")
    state, binder = open_in_browser(module.DEPS, "lib-watch")
    query = [("code", "made-up-code-5Tz81q"), ("state", state)]
    register_codes_and_states(watch, query)

    page = handlers.invoke(
        module, http_event("GET", "/oauth/callback", query=query, cookies=[f"{pages.BINDER_COOKIE}={binder}"])
    )["body"]

    leaky = page.replace("</p>", " (made-up-code-5Tz81q)</p>", 1)
    assert apicbase.token_requests == 1 and leaky != page
    assert not watch.leaks([page])
    assert watch.leaks([leaky])
