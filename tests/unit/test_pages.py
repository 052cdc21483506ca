"""The callback's pages in the integrator's name: "Connect <BrandName> to Apicbase", a support link
on error pages, a way back, and a success page that names the Apicbase user and library. Texts
stay fixed; what varies is the operator's setting or Apicbase's answer, escaped."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from apicbase_oauth.config import Brand, Settings
from apicbase_oauth.edge import pages
from apicbase_oauth.errors import ConfigurationError
from tests.binding import open_in_browser
from tests.conftest import load_event

CID = "lib-42"
RETURN_URL = "https://integrator.example.com/apicbase/done?tenant=7"

ACME = Brand(name="Acme Kitchen", support_url="https://acme.example/help", return_url="https://acme.example/app")
SCRIPT = "<script>alert(1)</script>"


def body(page: tuple[int, dict[str, str], str]) -> str:
    return page[2]


def test_every_page_says_whose_connect_it_is():
    assert "Connect Acme Kitchen to Apicbase" in body(pages.failure("invalid_state", 400, brand=ACME))
    assert "Connect Acme Kitchen to Apicbase" in body(
        pages.connected(CID, username="chef", library="Main", return_url=None, brand=ACME)
    )
    assert "Connect to Apicbase" in body(pages.failure("invalid_state", 400))


def test_error_pages_link_to_support_and_the_success_page_does_not():
    link = '<a href="https://acme.example/help" rel="noopener noreferrer">Get help from Acme Kitchen</a>'
    assert link in body(pages.failure("invalid_grant", 400, brand=ACME))
    assert link in body(pages.unexpected(ACME))
    success = body(pages.connected(CID, username="u", library=None, return_url=None, brand=ACME))
    assert "acme.example/help" not in success


def test_a_page_leads_back_to_the_session_s_return_url_else_the_default():
    # A 5xx after the session was known is a page (not a hand-over): its way back is the session's
    on_5xx = body(pages.failure("dependency_unavailable", 503, return_url=RETURN_URL, connection_id=CID, brand=ACME))
    assert '<a href="https://integrator.example.com/apicbase/done?tenant=7" rel="noopener noreferrer">' in on_5xx
    # Before any session is known, or when it named none: the brand's default
    assert 'href="https://acme.example/app"' in body(pages.failure("invalid_state", 400, brand=ACME))
    assert "Back to Acme Kitchen" in body(pages.connected(CID, username="u", library=None, return_url=None, brand=ACME))
    # Without a brand: no way back to show
    assert "<a " not in body(pages.failure("invalid_state", 400))


@pytest.mark.parametrize(
    ("username", "library", "said"),
    [
        ("chef", "Main kitchen", "Your Apicbase library Main kitchen is connected, signed in as chef."),
        ("chef", None, "Your Apicbase library is connected, signed in as chef."),
        (None, None, "Your Apicbase library is connected."),
    ],
)
def test_the_success_page_names_the_apicbase_user_and_library_not_the_connection_id(username, library, said):
    page = body(pages.connected(CID, username=username, library=library, return_url=None))
    assert said in page
    assert CID not in page


def test_what_apicbase_or_the_operator_says_is_escaped():
    page = body(pages.connected(CID, username=SCRIPT, library=SCRIPT, return_url=None, brand=Brand(name=SCRIPT)))
    assert SCRIPT not in page
    assert "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BRAND_NAME", "x" * 61), ("BRAND_NAME", "Acme\nKitchen"), ("SUPPORT_URL", "javascript:alert(1)")],
)
def test_a_bad_brand_setting_is_a_configuration_error(settings_env, variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({**settings_env, variable: value})


@pytest.fixture
def settings_env(aws, template) -> dict[str, str]:
    return dict(aws.env(template, "CallbackFunction"))


def test_the_callback_answers_in_the_brand_it_is_deployed_with(load_handler, deps, apicbase, lambda_context):
    # Given the callback deployed with a brand (template parameters BrandName, SupportUrl, DefaultReturnUrl)
    module = load_handler("CallbackFunction")
    module.DEPS, module.BRAND = deps, ACME

    def callback(query: dict[str, str], binder: str | None = None) -> str:
        event = load_event("callback.json") | {"queryStringParameters": query, "rawQueryString": urlencode(query)}
        event["cookies"] = [f"{pages.BINDER_COOKIE}={binder}"] if binder else []
        return str(module.lambda_handler(event, lambda_context)["body"])

    # When a person comes back with a forged state, and another one connects
    refused = callback({"code": "c", "state": "A" * 43})
    state, binder = open_in_browser(deps, CID)
    connected = callback({"code": apicbase.issue_code(), "state": state}, binder)
    # Then both pages are Acme's, the error page with its support link, and no query value is on either
    assert "Connect Acme Kitchen to Apicbase" in refused and "Get help from Acme Kitchen" in refused
    assert "Connect Acme Kitchen to Apicbase" in connected and "Back to Acme Kitchen" in connected
    assert "A" * 43 not in refused and state not in connected


def test_the_brand_is_read_from_the_callback_s_environment(settings_env):
    env = {**settings_env, "BRAND_NAME": " Acme Kitchen ", "SUPPORT_URL": ACME.support_url or ""}
    env["DEFAULT_RETURN_URL"] = ACME.return_url or ""
    assert Settings.from_env(env).brand == ACME
    assert Settings.from_env(settings_env).brand == Brand()
