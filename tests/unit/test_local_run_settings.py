"""The local run's template parameters from its environment (no processes: local.stack's Config
and the parameters it hands to the template)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from local.stack import Config, Stack

ANOTHER_APICBASE = {
    "APICBASE_AUTHORIZE_URL": "https://apicbase.example.com/oauth/authorize/",
    "APICBASE_TOKEN_URL": "https://apicbase.example.com/oauth/token/",
    "APICBASE_INTROSPECT_URL": "https://apicbase.example.com/oauth/introspect/",
    "APICBASE_CLIENT_ID": "id",
    "APICBASE_CLIENT_SECRET": "secret",
}


def parameters(env: dict[str, str]) -> dict[str, str]:
    stack = Stack(Config.from_env(env))
    stack.adapter = SimpleNamespace(url="http://127.0.0.1:3000")  # type: ignore[assignment]
    if stack.config.external is None:
        stack.sandbox_url = "http://127.0.0.1:8000"
    return stack._parameters()


def test_with_the_sandbox_tokens_are_revoked_at_the_sandbox():
    assert parameters({})["ApicbaseRevokeUrl"] == "http://127.0.0.1:8000/oauth/revoke_token/"


def test_with_another_apicbase_and_no_revoke_url_revocation_is_off_never_apicbase_s_production_host():
    # Given the run pointed at another Apicbase-like server without APICBASE_REVOKE_URL
    # Then DELETE /connections/{id} revokes nowhere (and says not_configured) instead of at the
    # template's default, which would send that server's token to api.apicbase.com
    assert parameters(ANOTHER_APICBASE)["ApicbaseRevokeUrl"] == ""


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "another-apicbase"])
def test_apicbase_revoke_url_is_honoured(sandbox):
    env = {"APICBASE_REVOKE_URL": "https://apicbase.example.com/oauth/revoke_token/"}
    if not sandbox:
        env |= ANOTHER_APICBASE
    assert parameters(env)["ApicbaseRevokeUrl"] == env["APICBASE_REVOKE_URL"]


def test_the_pages_settings_reach_the_template_s_parameters():
    env = {"BRAND_NAME": "Acme Kitchen", "SUPPORT_URL": "https://acme.example/help", "DEFAULT_RETURN_URL": ""}
    sent = parameters(env)
    assert (sent["BrandName"], sent["SupportUrl"]) == ("Acme Kitchen", "https://acme.example/help")
    assert "DefaultReturnUrl" not in sent  # empty: the template's default (none)
