"""The secrets watch that every test in this folder runs under must be able to see a leak."""

from apicbase_oauth.observability import logger


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
