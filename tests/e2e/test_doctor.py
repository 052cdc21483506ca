"""``apicbase-broker doctor`` and ``set-credentials`` as real processes against a local run of its
own (it changes the run's secret), found through the state file the run writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest
from local import template as tpl

from tests.e2e.localrun import ARTIFACTS, CLIENT_ID, CLIENT_SECRET, ROOT, LocalRun, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fresh_run() -> Iterator[LocalRun]:
    """A run of its own: the test sets its secret back to the placeholder."""
    ARTIFACTS.mkdir(exist_ok=True)
    with running(ARTIFACTS / "e2e-doctor-run.log") as run:
        yield run


def broker_cli(run: LocalRun, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``apicbase-broker ARGS --local-run <the run's state file>``, with no AWS settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "APICBASE_"))}
    env["PYTHONPATH"] = str(ROOT / "cli")
    command = [sys.executable, "-m", "apicbase_broker_cli", *args, "--local-run", str(run.state_file)]
    return subprocess.run(
        command, input=stdin, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_doctor_fails_on_the_placeholder_secret_and_passes_after_set_credentials(fresh_run, template):
    # Given the run's secret as a new stack has it: the template's placeholder
    state = json.loads(fresh_run.state_file.read_text())
    assert CLIENT_SECRET not in fresh_run.state_file.read_text()  # the state file holds no secret
    secrets = boto3.client(
        "secretsmanager", endpoint_url=state["aws_endpoint_url"], region_name=state["region"],
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip
    placeholder = tpl.resource(template, "ClientCredentialsSecret")["Properties"]["SecretString"]
    secrets.put_secret_value(SecretId=state["outputs"]["SecretArn"], SecretString=placeholder)
    # When the doctor runs
    before = broker_cli(fresh_run, "doctor")
    # Then it fails on the credentials, and says what to run
    assert before.returncode == 1, before.stdout + before.stderr
    assert "FAIL  credentials   default: not set (the placeholder SET-ME); run: apicbase-broker set-credentials" in (
        before.stdout
    )
    # When the sandbox's client id and secret are piped to set-credentials
    written = broker_cli(fresh_run, "set-credentials", stdin=f"{CLIENT_ID}\n{CLIENT_SECRET}\n")
    # Then the sandbox accepted them and they were written
    assert written.returncode == 0, written.stdout + written.stderr
    accepted = f"PASS  credentials  default: client {CLIENT_ID} accepted by {fresh_run.sandbox_url}/oauth/token/"
    assert written.stdout.startswith(accepted)
    # And the doctor passes: every line a PASS, the callback URL, or what a local run has not
    after = broker_cli(fresh_run, "doctor")
    (ARTIFACTS / "e2e-doctor.txt").write_text(before.stdout + "\n" + written.stdout + "\n" + after.stdout)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"INFO  callback URL  {fresh_run.callback_url}\n" in after.stdout
    verdicts = [line.split()[0] for line in after.stdout.splitlines()[1:-1] if not line.startswith(" ")]
    assert set(verdicts) == {"PASS", "INFO", "SKIP"}
    assert after.stdout.splitlines()[-1] == "Ready: every check passed (0 warning(s))."
    assert CLIENT_SECRET not in before.stdout + written.stdout + after.stdout + written.stderr
