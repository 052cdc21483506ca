"""The CLI as a process, and schemathesis, against ``python -m local.run`` (moto, the Apicbase
sandbox and the template's handlers behind the local API Gateway; unsigned)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from local.browser import open_connect_url
from local.sandbox.browserless import authorize_as
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.localrun import ROOT, LocalRun

pytestmark = pytest.mark.e2e
SPEC = ROOT / "docs" / "openapi.yaml"
# The local run serves the admin routes without SigV4 (by design), so the document is tested
# here without its security requirement; tests/unit/test_openapi.py checks that requirement.
_document = yaml.safe_load(SPEC.read_text())
_document["security"] = []
schema = schemathesis.openapi.from_dict(_document)
# API Gateway answers 404 to a method no route declares (not 405); the local stand-in does the
# same for the usual methods. Probing undeclared methods tests the stand-in, not the broker.
schema.config.phases.coverage.unexpected_methods = set()


def broker_cli(run: LocalRun, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``apicbase-broker`` as a separate process, exactly as an operator runs it."""
    env = {**os.environ, "PYTHONPATH": str(Path(ROOT, "cli")), "APICBASE_BROKER_API_URL": run.url}
    return subprocess.run(
        [sys.executable, "-m", "apicbase_broker_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_an_operator_connects_inspects_refreshes_and_disconnects(local_run):
    connection_id = f"cli-{uuid.uuid4().hex[:8]}"
    # Given a connect session started with the CLI
    connect = broker_cli(local_run, "--json", "connect", connection_id)
    assert connect.returncode == 0, connect.stderr
    # When the person signs in to the sandbox and its redirect reaches the callback
    authorize_url = open_connect_url(local_run.http, json.loads(connect.stdout)["connect_url"])
    location = authorize_as(local_run.sandbox_url, authorize_url)
    assert local_run.http.get(location, timeout=30).status_code == 200
    # Then the CLI shows it active, prints its token alone, refreshes it, lists and deletes it
    show = broker_cli(local_run, "--json", "show", connection_id, "--introspect")
    assert json.loads(show.stdout)["introspection"]["active"] is True
    token = broker_cli(local_run, "token", connection_id).stdout.strip()
    assert local_run.sandbox_introspect(token)["active"] is True
    refresh = broker_cli(local_run, "--json", "refresh", connection_id)
    assert json.loads(refresh.stdout)["outcome"] == "refreshed"
    assert connection_id in broker_cli(local_run, "list", "--all").stdout
    assert broker_cli(local_run, "disconnect", connection_id, "--yes").returncode == 0
    assert broker_cli(local_run, "show", connection_id).returncode == 4


def test_a_revoked_grant_exits_3(local_run):
    connection_id = f"cli-{uuid.uuid4().hex[:8]}"
    # Given a connection imported from a sandbox grant, which the sandbox then revokes
    pair = local_run.sandbox_grant()
    imported = broker_cli(local_run, "import-tokens", connection_id, stdin=json.dumps(pair))
    assert imported.returncode == 0, imported.stderr
    local_run.sandbox_hook("revoke")
    # When it is refreshed
    refresh = broker_cli(local_run, "refresh", connection_id)
    # Then exit code 3, with the command that fixes it, and no token anywhere in the output
    assert refresh.returncode == 3
    assert f"apicbase-broker connect {connection_id}" in refresh.stderr
    assert pair["refresh_token"] not in refresh.stdout + refresh.stderr


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_conforms_to_its_openapi_document(case, local_run):
    # Given generated requests for every operation in docs/openapi.yaml
    # When each is sent to the local run, Then no 5xx, and status, headers and bodies match
    # the document; invalid data is rejected with a 4xx. Left out: positive_data_acceptance,
    # because a schema-valid cursor, code or state is still refused (400, by design) unless this
    # server issued it.
    case.call_and_validate(base_url=local_run.url, session=local_run.http, excluded_checks=[positive_data_acceptance])
