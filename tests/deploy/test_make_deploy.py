"""``make deploy`` on a new account, without AWS: the questions it asks (answered on stdin) and the
commands it would run (--dry-run). tests/deploy/test_rehearsal.py runs it against moto's stacks."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_READ = "(dry run: CloudFormation not read: NoCredentialsError; as for a new stack)"


def no_aws() -> dict[str, str]:
    """Our environment with no AWS settings at all: a new machine, no credentials, no region."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return env


def make_deploy(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``make deploy ARGS="--dry-run ARGS"``; stdout without make's echo of the recipe."""
    command = ["make", "--no-print-directory", "deploy", f"ARGS=--dry-run {' '.join(args)}"]
    run = subprocess.run(
        command, cwd=ROOT, env=no_aws(), input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    echo, _, run.stdout = run.stdout.partition("\n")
    assert echo.startswith(".venv/bin/python scripts/deploy --dry-run"), echo
    return run


def test_a_new_account_is_asked_the_stack_name_and_the_region_then_sam_asks_to_apply():
    # When make deploy runs on a machine with no AWS configuration, Enter taking the stack name's
    # default and the region typed
    run = make_deploy("\neu-west-1\n")
    # Then it asked exactly two questions (each answer echoed), the stack name with its default
    # from samconfig.toml, before anything else
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[:4] == [
        "Stack name [apicbase-oauth-broker]: ",
        "AWS region: eu-west-1",
        NOT_READ,
        "Creating stack apicbase-oauth-broker in eu-west-1.",
    ]
    # And it would build, then deploy with that name and region, every other choice from samconfig.toml
    assert (
        "  make --no-print-directory build\n"
        "  .venv-sam/bin/sam deploy --stack-name apicbase-oauth-broker --region eu-west-1 "
        "--template-file .aws-sam/build/template.yaml\n"
    ) in run.stdout
    # And the third and last question is sam's own: apply the changeset (and nothing else is asked)
    deploy = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]["deploy"]["parameters"]
    assert deploy["confirm_changeset"] is True
    assert {"capabilities", "resolve_s3"} <= deploy.keys()
    # And then it points to the next steps, with the same stack and region
    assert "apicbase-broker set-credentials --stack-name apicbase-oauth-broker --region eu-west-1" in run.stdout
    assert "Register this redirect URL in your Apicbase application, exactly:" in run.stdout
    assert "apicbase-broker doctor --stack-name apicbase-oauth-broker --region eu-west-1" in run.stdout


def test_answers_can_be_given_up_front_and_wrong_ones_are_asked_again():
    # When the stack name comes as an option and the first region typed is not one
    run = make_deploy("Europe\neu-central-1\n", "--stack-name", "broker-prod")
    # Then only the region is asked, twice
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:4] == [
        "AWS region: Europe",
        "  not a valid aws region: 'Europe'",
        "AWS region: eu-central-1",
        NOT_READ,
    ]
    assert "--stack-name broker-prod --region eu-central-1" in run.stdout


def test_without_an_answer_or_a_default_it_stops():
    # When stdin ends before a region is given (none configured)
    run = make_deploy("\n")
    # Then it stops, saying what is missing, and runs nothing
    assert run.returncode != 0
    assert "make deploy: aws region: no answer and no default" in run.stderr
    assert "Would run" not in run.stdout
