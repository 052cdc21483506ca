"""Settings from the environment and client credentials from Secrets Manager: every problem is
reported at once and clearly, never with a secret in the message, and the secret is cached."""

from __future__ import annotations

import json
from typing import Any

import pytest
from local import template as tpl

from apicbase_oauth.adapters.credentials import CredentialStore
from apicbase_oauth.config import Settings, is_allowed_url, parse_scopes
from apicbase_oauth.edge import answers
from apicbase_oauth.errors import ConfigurationError, DependencyUnavailable
from tests import fakes

REQUIRED = [
    "TABLE_NAME",
    "TOKEN_KEY_ID",
    "CLIENT_SECRET_ID",
    "APICBASE_AUTHORIZE_URL",
    "APICBASE_TOKEN_URL",
    "APICBASE_INTROSPECT_URL",
]


@pytest.fixture
def env(aws, template) -> dict[str, str]:
    """The admin function's environment, as the template sets it."""
    return aws.env(template, "ConnectionsFunction")


def problems_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)
    assert raised.value.code == "configuration_error"
    return raised.value.message


# --- settings ---------------------------------------------------------------------------------
def test_the_templates_environment_gives_valid_settings(env: dict[str, str]) -> None:
    """Given the template's environment with its parameter defaults, then the settings are the
    documented defaults: PKCE off, a ten-minute state, Apicbase's default scopes."""
    settings = Settings.from_env(env)

    assert settings.table_name == env["TABLE_NAME"]
    assert (settings.pkce_enabled, settings.state_ttl_seconds) == (False, 600)
    assert settings.default_scopes == ("accounts", "library")
    assert settings.token_url == fakes.TOKEN_URL


def test_every_missing_variable_is_named_in_one_error() -> None:
    """Given an empty environment, then one ConfigurationError names every required variable."""
    message = problems_of({})

    for name in REQUIRED:
        assert f"{name} is not set" in message


def test_every_invalid_value_is_named_in_one_error(env: dict[str, str]) -> None:
    """Given several bad values at once, then one error lists each, so one deploy fixes all."""
    bad = {
        **env,
        "STATE_TTL_SECONDS": "ten",
        "TOKEN_LEEWAY_SECONDS": "-1",
        "PKCE_ENABLED": "yes",
        "DEFAULT_SCOPES": "accounts admin",
        "APICBASE_TOKEN_URL": "http://api.apicbase.com/oauth/token/",
        "CALLBACK_URL": "ftp://broker.example.com/cb",
    }

    message = problems_of(bad)

    for expected in (
        "STATE_TTL_SECONDS must be a whole number",
        "TOKEN_LEEWAY_SECONDS must be between",
        "PKCE_ENABLED must be true or false",
        "DEFAULT_SCOPES: unknown scope(s) admin",
        "APICBASE_TOKEN_URL must be an https URL",
        "CALLBACK_URL must be an https URL",
    ):
        assert expected in message


def test_plain_http_is_accepted_on_loopback_for_the_local_run(env: dict[str, str]) -> None:
    """Given the local sandbox's http URLs on 127.0.0.1, then they are accepted."""
    local = {
        **env,
        "APICBASE_TOKEN_URL": "http://127.0.0.1:8000/oauth/token/",
        "CALLBACK_URL": "http://localhost:3000/cb",
    }

    settings = Settings.from_env(local)

    assert settings.token_url == "http://127.0.0.1:8000/oauth/token/"
    assert settings.callback_url == "http://localhost:3000/cb"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.apicbase.com/oauth/token/", True),
        ("http://127.0.0.1:8000/o/token/", True),
        ("http://localhost/cb", True),
        ("http://[::1]:9000/cb", True),
        ("http://api.apicbase.com/oauth/token/", False),
        ("http://127.0.0.1.nip.io/cb", False),
        ("http://localhost.example.com/cb", False),
        ("https://user:password@api.apicbase.com/", False),
        ("ftp://api.apicbase.com/", False),
        ("https://", False),
        ("https://[::1", False),
        ("", False),
    ],
)
def test_https_everywhere_and_http_only_on_loopback(url: str, allowed: bool) -> None:
    """Given a configured or submitted URL, then https passes, and http only for a loopback host."""
    assert is_allowed_url(url) is allowed


def test_scopes_are_checked_deduplicated_and_kept_in_order() -> None:
    """Given repeated scopes, then each appears once in first-seen order; unknown or no scopes fail."""
    assert parse_scopes("library accounts library") == ("library", "accounts")
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(["library", "Library"])
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes("   ")


# --- client credentials -------------------------------------------------------------------------
@pytest.fixture
def secret(aws, env: dict[str, str]) -> Any:
    """Write the client-credentials secret; returns a function taking a value (str or JSON)."""
    client = aws.session.client("secretsmanager")

    def put(value: Any) -> None:
        client.put_secret_value(
            SecretId=env["CLIENT_SECRET_ID"], SecretString=value if isinstance(value, str) else json.dumps(value)
        )

    return put


@pytest.fixture
def secrets_client(aws) -> Any:
    return aws.session.client("secretsmanager")


@pytest.fixture
def store(secrets_client, env: dict[str, str]) -> CredentialStore:
    return CredentialStore(secrets_client, env["CLIENT_SECRET_ID"], max_age=300)


@pytest.fixture
def secret_reads(secrets_client) -> list[str]:
    """GetSecretValue calls made by the store, counted with a botocore event hook."""
    reads: list[str] = []
    secrets_client.meta.events.register(
        "before-parameter-build.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params["SecretId"])
    )
    return reads


def test_credentials_of_the_default_application(store: CredentialStore) -> None:
    """Given the secret names the default application, then its id and secret are returned,
    and printing them shows the id only."""
    credentials = store.get("default")

    assert (credentials.client_id, credentials.client_secret) == (fakes.CLIENT_ID, fakes.CLIENT_SECRET)
    assert fakes.CLIENT_SECRET not in repr(credentials)


def test_an_unknown_application_is_a_400_naming_it(store: CredentialStore) -> None:
    """Given an application the secret does not hold, then a 400 names it (a caller's mistake)."""
    with pytest.raises(ConfigurationError) as raised:
        store.get("staging")

    assert (raised.value.code, answers.status_of(raised.value)) == ("unknown_application", 400)
    assert "'staging'" in raised.value.message
    assert fakes.CLIENT_SECRET not in raised.value.message


def test_the_templates_placeholder_secret_is_refused_with_a_hint(secret, store: CredentialStore, template) -> None:
    """Given the secret as a fresh deploy leaves it (SET-ME), then the error says to set it."""
    secret(tpl.resource(template, "ClientCredentialsSecret")["Properties"]["SecretString"])

    with pytest.raises(ConfigurationError) as raised:
        store.get("default")

    assert raised.value.code == "credentials_not_configured"
    assert "README" in raised.value.message


@pytest.mark.parametrize(
    "entry",
    [
        {"client_id": "client-default", "client_secret": "SET-ME"},
        {"client_id": "", "client_secret": "s3cret-value"},
        {"client_id": "client-default"},
        {"client_id": "client-default", "client_secret": 12345},
        {"client_id": "client-default", "client_secret": "   "},
    ],
    ids=["secret-placeholder", "empty-id", "no-secret", "secret-not-text", "blank-secret"],
)
def test_incomplete_credentials_are_not_configured(secret, store: CredentialStore, entry: dict[str, Any]) -> None:
    """Given an application whose id or secret is unset, blank or not text, then it is refused."""
    secret({"default": entry})

    with pytest.raises(ConfigurationError) as raised:
        store.get("default")

    assert raised.value.code == "credentials_not_configured"
    assert "s3cret-value" not in raised.value.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"default": {"client_id": "c", "client_secret": "s3cret-value"', "not valid JSON"),
        ('[{"client_id": "c", "client_secret": "s3cret-value"}]', "not a JSON object"),
    ],
    ids=["truncated-json", "json-array"],
)
def test_a_secret_that_is_not_a_json_object_is_a_configuration_error(
    secret, store: CredentialStore, value: str, words: str
) -> None:
    """Given a hand-edited secret that broke, then the error says so without quoting it."""
    secret(value)

    with pytest.raises(ConfigurationError) as raised:
        store.get("default")

    assert words in raised.value.message
    assert "s3cret-value" not in str(raised.value)


def test_a_missing_secret_is_a_dependency_failure(secrets_client) -> None:
    """Given a secret that does not exist, then it is a dependency failure, not a bad request."""
    with pytest.raises(DependencyUnavailable):
        CredentialStore(secrets_client, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gone-AbCdEf").get(
            "default"
        )


def test_the_secret_is_read_once_then_cached(store: CredentialStore, secret_reads: list[str]) -> None:
    """Given credentials read once, when they are asked for again, then Secrets Manager is not called."""
    store.get("default")
    store.get("default")

    assert secret_reads == [store.secret_id]


def test_force_fetch_bypasses_the_cache_and_sees_a_rotated_secret(
    secret, store: CredentialStore, secret_reads: list[str]
) -> None:
    """Given a cached secret rotated since, then a normal read still serves the cached value and
    force_fetch (what a refresh does after invalid_client) reads the new one."""
    store.get("default")
    secret({"default": {"client_id": fakes.CLIENT_ID, "client_secret": "rotated-secret-0001"}})

    cached = store.get("default")
    fresh = store.get("default", force_fetch=True)

    assert cached.client_secret == fakes.CLIENT_SECRET
    assert fresh.client_secret == "rotated-secret-0001"
    assert len(secret_reads) == 2
