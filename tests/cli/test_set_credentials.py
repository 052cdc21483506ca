"""``apicbase-broker set-credentials``: the client id and secret from a prompt or stdin (never
argv), checked with Apicbase's token endpoint before they are written into the stack's secret."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from local import template as tpl

from apicbase_broker_cli.main import main
from tests import fakes


def secret_of(deployed) -> dict[str, Any]:
    raw = deployed.client("secretsmanager").get_secret_value(SecretId=deployed.outputs["SecretArn"])["SecretString"]
    return json.loads(raw)


@pytest.fixture
def fresh(deployed, template) -> dict[str, Any]:
    """Given the secret as a new stack has it: the template's placeholder."""
    placeholder = tpl.resource(template, "ClientCredentialsSecret")["Properties"]["SecretString"]
    deployed.client("secretsmanager").put_secret_value(SecretId=deployed.outputs["SecretArn"], SecretString=placeholder)
    return json.loads(placeholder)


def test_accepted_credentials_from_stdin_are_written_and_doctor_then_passes(on_stack, deployed, fresh):
    # When the operator pipes the client id and secret in
    run = on_stack("set-credentials", stdin=f"{fakes.CLIENT_ID}\n{fakes.CLIENT_SECRET}\n")
    # Then Apicbase accepted them and they are in the secret, under "default"
    assert run.code == 0, run.out + run.err
    assert run.out.startswith(f"PASS  credentials  default: client {fakes.CLIENT_ID} accepted")
    assert secret_of(deployed) == fakes.APPLICATIONS
    # And the secret itself was printed nowhere
    assert fakes.CLIENT_SECRET not in run.out + run.err
    # And the doctor's credentials line passes now
    assert on_stack("doctor").code == 0


def test_rejected_credentials_are_not_written(on_stack, deployed, fresh, apicbase):
    # Given the secret holds working credentials
    on_stack("set-credentials", stdin=f"{fakes.CLIENT_ID}\n{fakes.CLIENT_SECRET}\n")
    # When someone sets a secret Apicbase rejects
    run = on_stack("set-credentials", stdin=f"{fakes.CLIENT_ID}\nmistyped-secret\n")
    # Then nothing is written: the working credentials stay
    assert run.code == 1
    assert "(invalid_client)" in run.out
    assert run.out.rstrip().endswith("Nothing was written (--force writes them anyway).")
    assert secret_of(deployed) == fakes.APPLICATIONS
    # And --force writes them all the same, still exiting 1
    forced = on_stack("set-credentials", "--force", stdin=f"{fakes.CLIENT_ID}\nmistyped-secret\n")
    assert forced.code == 1
    assert secret_of(deployed)["default"]["client_secret"] == "mistyped-secret"


def test_another_application_is_added_beside_the_others(on_stack, deployed, fresh):
    # When credentials are set for a second application
    run = on_stack("set-credentials", "--application", "sandbox", stdin=f"{fakes.CLIENT_ID}\n{fakes.CLIENT_SECRET}\n")
    # Then it is added and the default one is left as it was
    assert run.code == 0
    assert secret_of(deployed) == {**fresh, "sandbox": fakes.APPLICATIONS["default"]}


def test_a_new_client_id_warns_about_the_connections_of_the_old_one(on_stack, deployed, apicbase):
    # Given the default application's credentials, and Apicbase accepting another client
    apicbase.client_id, apicbase.client_secret = "client-production", "secret-production-0123"
    # When the default application gets that other client
    run = on_stack("set-credentials", stdin="client-production\nsecret-production-0123\n")
    # Then the operator is told what happens to the connections made with the old one
    assert run.code == 0
    assert f"The client id changed (was {fakes.CLIENT_ID})" in run.out


def test_the_prompt_does_not_echo_the_secret(on_stack, deployed, fresh, monkeypatch):
    # Given a terminal: the id is typed visibly, the secret without echo
    prompts: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or fakes.CLIENT_ID)
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or fakes.CLIENT_SECRET)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    # When set-credentials runs
    code = main(["--stack-name", "broker-under-test", "set-credentials"])
    # Then the secret came from getpass, and was written
    assert code == 0
    assert prompts == ["Apicbase client id: ", "Apicbase client secret (not echoed): "]
    assert secret_of(deployed) == fakes.APPLICATIONS


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--client-secret", "s3cret"], "", "unrecognized arguments"),
        ([], f"{fakes.CLIENT_ID}\n", "expected the client id and the client secret"),
        ([], f"{fakes.CLIENT_ID}\nhas spaces in it\n", "has no spaces"),
        (["--application", "../default"], "", "--application must be"),
    ],
)
def test_what_cannot_be_right_is_a_usage_error_and_writes_nothing(on_stack, deployed, fresh, args, stdin, says):
    # When set-credentials gets a secret on the command line, or an unusable input
    run = on_stack("set-credentials", *args, stdin=stdin)
    # Then it exits 2, says why, and the secret is unchanged
    assert run.code == 2
    assert says in run.err
    assert secret_of(deployed) == fresh
