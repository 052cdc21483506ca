"""The HTTP edge hands flows checked values: the callback's query, the callback's own origin,
and handlers bound by the route table."""

from __future__ import annotations

import pytest

from apicbase_oauth.edge import checks, gateway, routes
from apicbase_oauth.errors import ConfigurationError

STATE = "s" * 43


def test_a_configured_callback_url_wins_over_the_request_s_domain() -> None:
    assert gateway.redirect_uri("https://broker.example.com/oauth/callback", "other.example.com") == (
        "https://broker.example.com/oauth/callback"
    )


def test_without_one_the_callback_is_on_the_admin_request_s_own_domain() -> None:
    assert gateway.redirect_uri(None, "abc.execute-api.eu-west-1.amazonaws.com") == (
        "https://abc.execute-api.eu-west-1.amazonaws.com/oauth/callback"
    )


@pytest.mark.parametrize("domain", [None, "", "evil.example.com/path", "a b", "host\n"])
def test_a_domain_that_is_not_a_host_name_is_a_configuration_error(domain: str | None) -> None:
    with pytest.raises(ConfigurationError):
        gateway.redirect_uri(None, domain)


@pytest.mark.parametrize("value", [None, "", "s" * 42, "s" * 44, STATE + "\n", "s" * 42 + "!"])
def test_a_one_time_value_not_shaped_as_we_issue_them_is_none(value: str | None) -> None:
    assert checks.issued(value) is None


def test_a_one_time_value_shaped_as_we_issue_them_passes_whole() -> None:
    assert checks.issued(STATE) == STATE


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("a b", None), ("c" * 513, None), ("c-1", "c-1")]
)
def test_the_callback_s_code_is_a_code_or_none(value: str | None, expected: str | None) -> None:
    assert checks.code_or_none(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("access_denied", "access_denied"),
        ("<script>", "authorization_failed"),
        ("", "authorization_failed"),
    ],
)
def test_the_callback_s_error_is_oauth_s_code_or_authorization_failed(value: str | None, expected: str | None) -> None:
    assert checks.redirect_error(value) == expected


def test_a_handler_module_that_does_not_match_the_route_table_fails_to_bind() -> None:
    with pytest.raises(LookupError):
        routes.bind(routes.CALLBACK, {"start": print})
    with pytest.raises(LookupError):
        routes.bind(routes.CALLBACK, {"start": print, "callback": print, "extra": print})
    bound = routes.bind(routes.CALLBACK, {"start": print, "callback": print})
    assert {route.route_key for route in bound} == {"GET /oauth/start", "GET /oauth/callback"}
