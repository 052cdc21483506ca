"""``apicbase-broker doctor`` against a stack's resources in moto (built from template.yaml), the
admin API's handler on 127.0.0.1 and the fake Apicbase: a verdict per line, exit code 1 on any
FAIL. Only the CloudFormation lookup is replaced (tests/deploy/test_rehearsal.py runs it for real)."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from local import template as tpl

from apicbase_broker_cli import doctor, target
from apicbase_broker_cli.main import main
from tests import fakes
from tests.cli.conftest import Run
from tests.cli.deployed import FUNCTION, STACK, alarms
from tests.conftest import CALLBACK_URL
from tests.unit.refresh_support import WEEK, real_clock, seed


@pytest.fixture
def run_doctor(on_stack) -> Callable[..., Run]:
    return lambda *args: on_stack(*args, "doctor")


def verdicts(run: Run) -> dict[str, list[str]]:
    """check name -> its verdicts, from the --json output."""
    found: dict[str, list[str]] = {}
    for check in json.loads(run.out)["checks"]:
        found.setdefault(check["name"], []).append(check["verdict"])
    return found


def details(run: Run, name: str) -> str:
    return " | ".join(c["detail"] for c in json.loads(run.out)["checks"] if c["name"] == name)


def _put_secret(deployed: target.Target, applications: dict[str, Any]) -> None:
    deployed.client("secretsmanager").put_secret_value(
        SecretId=deployed.outputs["SecretArn"], SecretString=json.dumps(applications)
    )


def test_a_healthy_stack_passes_every_check(run_doctor):
    # Given the stack with the client's credentials in its secret and alarms that notify a topic
    # When the doctor runs
    run = run_doctor()
    # Then every line passes (the callback URL is information) and the exit code is 0
    assert run.code == 0, run.out
    assert run.out.splitlines()[-1] == "Ready: every check passed (0 warning(s))."
    assert f"INFO  callback URL  {CALLBACK_URL}" in run.out
    assert "FAIL" not in run.out and "WARN" not in run.out


def test_the_template_s_placeholder_fails_and_says_what_to_run(run_doctor, deployed, template, apicbase):
    # Given the secret as the template creates it
    placeholder = tpl.resource(template, "ClientCredentialsSecret")["Properties"]["SecretString"]
    _put_secret(deployed, json.loads(placeholder))
    # When the doctor runs
    run = run_doctor("--json")
    # Then the credentials line fails, names the command, and Apicbase was not even asked
    assert run.code == 1
    assert verdicts(run)["credentials"] == ["FAIL"]
    assert "run: apicbase-broker set-credentials" in details(run, "credentials")
    assert apicbase.token_requests == 0


@pytest.mark.parametrize(
    ("secret", "verdict", "says"),
    [
        (fakes.CLIENT_SECRET, "PASS", f"client {fakes.CLIENT_ID} accepted"),
        ("rotated-in-apicbase", "FAIL", "(invalid_client)"),
    ],
)
def test_credentials_are_checked_with_a_made_up_code(run_doctor, deployed, apicbase, secret, verdict, says):
    # Given the secret's client id with a secret Apicbase does (or does not) accept
    _put_secret(deployed, {"default": {"client_id": fakes.CLIENT_ID, "client_secret": secret}})
    forms: list[dict[str, str]] = []
    apicbase.on_form = forms.append
    # When the doctor runs
    run = run_doctor("--json")
    # Then invalid_grant (authenticated) passes and invalid_client fails
    assert verdicts(run)["credentials"] == [verdict]
    assert says in details(run, "credentials")
    # And the one request was an authorization-code exchange of a code nobody issued
    (form,) = forms
    assert (form["grant_type"], form["redirect_uri"]) == ("authorization_code", CALLBACK_URL)
    assert form["code"].startswith("doctor-")
    assert apicbase.refresh_requests == 0
    # And no secret reaches the output
    assert secret not in run.out + run.err


def test_connections_are_not_touched_and_those_needing_reauthorization_are_counted(
    run_doctor, deps, apicbase, aws, monkeypatch
):
    # Given two connections, one of which needs reauthorization
    monkeypatch.setattr(deps, "now", real_clock())
    for connection_id in ("lib-1", "lib-2"):
        seed(deps, apicbase, connection_id, expires_in=WEEK)
    aws.table.update_item(
        Key={"pk": "CONN#lib-2"},
        UpdateExpression="SET #s = :s REMOVE refresh_queue",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": "needs_reauthorization"},
    )
    before = aws.table.scan()["Items"]
    # When the doctor runs
    run = run_doctor("--json")
    # Then it warns with the count and the id, and exits 0 (a warning is not a failure)
    assert run.code == 0
    assert verdicts(run)["connections"] == ["WARN"]
    assert details(run, "connections").startswith("1 of 2 need reauthorization (lib-2)")
    # And nothing in the table changed
    assert aws.table.scan()["Items"] == before


def test_a_connection_of_an_application_missing_from_the_secret_fails(run_doctor, deps, apicbase, deployed):
    # Given a connection of the default application, and a secret that lost it
    seed(deps, apicbase, "lib-1", expires_in=WEEK)
    _put_secret(deployed, {"sandbox": {"client_id": fakes.CLIENT_ID, "client_secret": fakes.CLIENT_SECRET}})
    # When the doctor runs
    run = run_doctor("--json")
    # Then the connections line says so
    assert verdicts(run)["connections"] == ["PASS", "FAIL"]
    assert details(run, "connections").endswith("their applications default are not in the secret")


def test_alarms_without_a_destination_warn_and_a_firing_one_is_named(run_doctor, deployed, aws, template):
    # Given the alarms as a stack without AlarmTopicArn creates them, one of them in ALARM
    deployed.resources |= alarms(aws.session, template, topic=None)
    aws.session.client("cloudwatch").set_alarm_state(
        AlarmName=f"{STACK}-InvalidClientAlarm-X1", StateValue="ALARM", StateReason="test"
    )
    # When the doctor runs
    run = run_doctor("--json")
    # Then both are warnings, with what to do
    assert verdicts(run)["alarms"] == ["WARN", "WARN"]
    assert "notify nobody: deploy with AlarmTopicArn=<SNS topic>" in details(run, "alarms")
    assert f"in ALARM: {STACK}-InvalidClientAlarm-X1" in details(run, "alarms")
    assert run.code == 0


def test_a_disabled_schedule_fails(run_doctor, deployed):
    # Given the refresh schedule disabled by hand
    scheduler = deployed.client("scheduler")
    schedule = scheduler.get_schedule(Name=f"{STACK}-Tick")
    scheduler.update_schedule(
        Name=schedule["Name"], ScheduleExpression=schedule["ScheduleExpression"], State="DISABLED",
        FlexibleTimeWindow=schedule["FlexibleTimeWindow"], Target=schedule["Target"],
    )  # fmt: skip
    # When the doctor runs
    run = run_doctor("--json")
    # Then the schedule line fails
    assert run.code == 1
    assert verdicts(run)["schedule"] == ["FAIL"]
    assert "is DISABLED" in details(run, "schedule")


def test_a_message_in_the_dead_letter_queue_fails(run_doctor, aws):
    # Given one message dead-lettered (the queue the refresh queue's redrive policy names)
    aws.session.client("sqs").send_message(QueueUrl=aws.refs["RefreshDeadLetterQueue"], MessageBody="lib-1")
    # When the doctor runs
    run = run_doctor("--json")
    # Then that queue fails, with the command that moves the messages back
    assert run.code == 1
    assert verdicts(run)["dead letters"] == ["FAIL"]
    assert "RefreshDeadLetterQueue holds 1 message(s)" in details(run, "dead letters")
    assert "start-message-move-task" in details(run, "dead letters")


@pytest.mark.parametrize("change", ["disable_key_rotation", "disable_key"])
def test_a_key_that_is_disabled_or_not_rotated_fails(run_doctor, aws, change):
    # Given the token key disabled, or its rotation turned off
    getattr(aws.session.client("kms"), change)(KeyId=aws.refs["TokenKey"])
    # When the doctor runs
    run = run_doctor("--json")
    # Then the key line fails
    assert run.code == 1
    assert verdicts(run)["token key"] == ["FAIL"]


def test_a_restored_table_without_point_in_time_recovery_warns(run_doctor, aws):
    # Given the table's point-in-time recovery off (a restored table starts without it)
    aws.session.client("dynamodb").update_continuous_backups(
        TableName=aws.refs["ConnectionsTable"],
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )
    # When the doctor runs
    run = run_doctor("--json")
    # Then the table line warns
    assert verdicts(run)["table"] == ["WARN"]
    assert "point-in-time recovery is off" in details(run, "table")


def test_a_function_s_last_error_is_shown(run_doctor, aws):
    # Given two errors in the worker's log (moto keeps a function's logs in /aws/lambda/<name>)
    logs, group = aws.session.client("logs"), f"/aws/lambda/{STACK}-{FUNCTION}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[
            {"timestamp": now - 2000, "message": "Task timed out after 60.00 seconds"},
            {"timestamp": now - 1000, "message": json.dumps({"level": "ERROR", "message": "refresh failed\nbadly"})},
        ],
    )
    # When the doctor runs
    run = run_doctor("--json")
    # Then the worker's line warns with the count and the last message, on one line
    assert verdicts(run)["errors"] == ["WARN"]
    assert details(run, "errors").startswith(f"{FUNCTION}: 2 in the last 24 h, the last at ")
    assert details(run, "errors").endswith(": refresh failed badly")


def test_a_check_aws_refuses_fails_alone(run_doctor, deployed):
    # Given a stack whose table is gone
    deployed.outputs["TableName"] = "deleted-by-hand"
    # When the doctor runs
    run = run_doctor("--json")
    # Then the table line fails with AWS's reason, and the other checks still ran
    assert run.code == 1
    assert details(run, "table").startswith("could not check: ResourceNotFoundException")
    assert verdicts(run)["schedule"] == ["PASS"]


def test_a_stack_without_the_broker_s_outputs_stops_at_the_first_line(run_doctor, deployed):
    # Given a stack that is not the broker's
    deployed.outputs.pop("SecretArn")
    # When the doctor runs
    run = run_doctor()
    # Then it says so and checks nothing else
    assert run.code == 1
    assert run.out.splitlines()[1:] == [
        "FAIL  stack  outputs missing: SecretArn (is it this repository's template?)",
        "1 check(s) failed, 0 warning(s): see the FAIL lines.",
    ]


def test_without_a_stack_or_a_local_run_it_is_a_usage_error(capsys, monkeypatch):
    # When the doctor has nothing to check
    monkeypatch.delenv(target.ENV_STACK, raising=False)
    monkeypatch.delenv(target.ENV_LOCAL_RUN, raising=False)
    code = main(["doctor"])
    # Then it says what to pass, with exit code 2
    assert code == 2
    assert "pass --stack-name" in capsys.readouterr().err


def test_a_state_file_naming_another_host_is_refused(tmp_path, capsys, monkeypatch):
    # Given a state file that would send AWS calls off this machine
    state = tmp_path / "local-run.json"
    state.write_text(
        json.dumps(
            {"aws_endpoint_url": "http://attacker.example:5000", "region": "eu-west-1", "outputs": {}}
            | {"parameters": {}, "resources": {}}
        )
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    # When the doctor is pointed at it
    code = main(["doctor", "--local-run", str(state)])
    # Then nothing is called
    assert code == 2
    assert "outside 127.0.0.1" in capsys.readouterr().err


def test_every_check_has_a_verdict_line(deployed):
    # Given the healthy stack, When the checks run, Then each of doctor's checks said something
    assert {c.name for c in doctor.run_checks(deployed)} == {name for name, _ in doctor.CHECKS}
