"""get_access_token for integrators' Lambdas, and examples/consumer_lambda.py (moto + responses)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import responses

from apicbase_oauth import connect, consumer, get_access_token
from tests import fakes

ROOT = Path(__file__).resolve().parents[2]
RECIPES = "https://api.apicbase.com/api/v2/products/recipes/"


@pytest.fixture
def apicbase_api(clock):
    """Apicbase's OAuth endpoints (the fake) and its data API, in one responses mock."""
    fake = fakes.FakeApicbase(now=clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.register(mock)
        yield fake, mock


@pytest.fixture
def use_deps(deps, monkeypatch):
    """The helper's per-container Deps, on moto with the test clock."""
    monkeypatch.setattr(consumer, "_deps", deps)
    return deps


def seed(deps, fake, connection_id: str = "lib-1") -> tuple[str, str]:
    access, refresh = fake.issue_pair()
    connect.import_tokens(deps, connection_id, access_token=access, refresh_token=refresh, expires_in=604800)
    return access, refresh


def load_example():
    spec = importlib.util.spec_from_file_location("consumer_lambda", ROOT / "examples" / "consumer_lambda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_package_builds_nothing():
    # When a module of the layer is imported in a fresh interpreter
    code = "import sys, apicbase_oauth.errors; print('apicbase_oauth.connect' in sys.modules, 'boto3' in sys.modules)"
    env_path = str(ROOT / "layers" / "apicbase_oauth")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": env_path}
    ).stdout
    # Then neither the use cases nor boto3 were loaded
    assert out.split() == ["False", "False"]


def test_deps_are_built_from_the_environment_on_first_use(aws, template, apicbase, deps, monkeypatch):
    # Given the broker's environment and a stored connection, and no Deps yet
    for name, value in aws.env(template, "ConnectionsFunction").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(consumer, "_deps", None)
    access, _ = seed(deps, apicbase)
    # When a token is asked for
    token = get_access_token("lib-1")
    # Then the stored token comes back and the Deps stay for the next call
    assert token == access
    assert consumer._deps is not None


def test_a_valid_token_is_returned_without_a_refresh(use_deps, apicbase):
    # Given a connection whose token is valid for a week
    access, _ = seed(use_deps, apicbase)
    # When a token is asked for, Then it is the stored one, and Apicbase is not asked
    assert get_access_token("lib-1") == access
    assert apicbase.refresh_requests == 0


def test_a_token_about_to_expire_is_refreshed_and_the_rotated_pair_stored(use_deps, apicbase, clock):
    # Given a connection whose token expires within the leeway
    access, _ = seed(use_deps, apicbase)
    clock.advance(604800 - 60)
    # When a token is asked for
    token = get_access_token("lib-1")
    # Then one refresh happened and the new pair is what the store holds
    assert token != access
    assert apicbase.refresh_requests == 1
    stored = use_deps.cipher.decrypt("lib-1", use_deps.store.get("lib-1").tokens)
    assert (stored.access_token, stored.refresh_token) == (token, apicbase.issued_refresh_tokens[-1])


def test_a_rejected_token_forces_one_refresh(use_deps, apicbase):
    # Given a valid-looking token that Apicbase answered 401 to
    access, _ = seed(use_deps, apicbase)
    # When the helper is told so
    token = get_access_token("lib-1", rejected_token=access)
    # Then the connection is refreshed once and the new token returned
    assert token != access
    assert apicbase.refresh_requests == 1


def test_a_rejected_token_already_replaced_is_not_refreshed_again(use_deps, apicbase):
    # Given a token that another caller has already replaced
    old, _ = seed(use_deps, apicbase)
    newer = get_access_token("lib-1", rejected_token=old)
    # When a second caller reports the same old token
    token = get_access_token("lib-1", rejected_token=old)
    # Then it gets the newer token and Apicbase sees no second refresh
    assert token == newer
    assert apicbase.refresh_requests == 1


def test_example_retries_once_with_a_fresh_token_after_a_401(use_deps, apicbase_api, monkeypatch):
    # Given a stored token that Apicbase's API rejects once
    fake, mock = apicbase_api
    access, _ = seed(use_deps, fake)
    mock.get(RECIPES, status=401, json={"detail": "invalid token"})
    mock.get(RECIPES, status=200, json={"results": [{"name": "Soup"}]})
    monkeypatch.setenv("APICBASE_CONNECTION_ID", "lib-1")
    # When the example function runs
    result = load_example().lambda_handler({}, None)
    # Then it refreshed once and the retry carried the new token
    calls = [c for c in mock.calls if c.request.url == RECIPES]
    assert result == {"results": [{"name": "Soup"}]}
    assert fake.refresh_requests == 1
    assert calls[0].request.headers["Authorization"] == f"Bearer {access}"
    assert calls[1].request.headers["Authorization"] != f"Bearer {access}"


def test_example_gives_up_after_one_retry(use_deps, apicbase_api, monkeypatch):
    # Given an API that rejects every token
    fake, mock = apicbase_api
    seed(use_deps, fake)
    mock.get(RECIPES, status=401, json={"detail": "invalid token"})
    # When the example calls it, Then it fails after exactly one refresh and two calls
    with pytest.raises(requests.HTTPError):
        load_example().call_apicbase("lib-1", "/products/recipes/")
    assert fake.refresh_requests == 1
    assert len([c for c in mock.calls if c.request.url == RECIPES]) == 2
