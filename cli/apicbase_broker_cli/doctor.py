"""``apicbase-broker doctor``: is this broker ready, and is it well? One line per check, each with
a verdict (PASS, WARN, FAIL; INFO and SKIP say something without judging), and exit code 1 when
any check failed.

Nothing here changes the broker: the credentials check sends Apicbase a made-up authorization
code (``invalid_grant`` proves the client authenticated, ``invalid_client`` that it did not), so
no connection is touched. Each check catches its own AWS or HTTP errors (a missing permission
fails that line, not the doctor).
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from apicbase_broker import BrokerError
from apicbase_broker.signing import is_local

from . import output, target
from .target import Target

PASS, WARN, FAIL, INFO, SKIP = "PASS", "WARN", "FAIL", "INFO", "SKIP"
PLACEHOLDER = "SET-ME"  # the template's SecretString
REQUIRED_OUTPUTS = ("ApiUrl", "CallbackUrl", "TableName", "SecretArn", "RefreshQueueUrl", "TokenKeyArn")
READY_STATUSES = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "RUNNING"}
INDEXES = {"connections-by-id", "refresh-due"}
ERROR_WINDOW_HOURS = 24
# A text pattern: Powertools' JSON lines carry the term ERROR, Lambda's own timeouts this phrase.
ERROR_PATTERN = '?ERROR ?"Task timed out"'
MAX_ERROR_EVENTS = 10_000
APICBASE_TIMEOUT = (5, 20)


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str


# --- the checks ------------------------------------------------------------------------------------
def check_stack(broker: Target) -> Iterator[Check]:
    missing = [name for name in REQUIRED_OUTPUTS if not broker.outputs.get(name)]
    if broker.status not in READY_STATUSES:
        yield Check("stack", FAIL, f"{broker.description} is {broker.status or 'unknown'}")
    elif missing:
        yield Check("stack", FAIL, f"outputs missing: {', '.join(missing)} (is it this repository's template?)")
    else:
        yield Check("stack", PASS, f"{broker.status}; every output present")


def check_callback_url(broker: Target) -> Iterator[Check]:
    yield Check(
        "callback URL",
        INFO,
        f"{broker.outputs['CallbackUrl']}\nregister exactly this as the redirect URL of your Apicbase application",
    )


def read_applications(broker: Target) -> dict[str, Any]:
    """The client-credentials secret's applications ({} when it is not a JSON object)."""
    raw = broker.client("secretsmanager").get_secret_value(SecretId=broker.outputs["SecretArn"])["SecretString"]
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_set(entry: Any) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), str) and entry[k].strip() and entry[k] != PLACEHOLDER
        for k in ("client_id", "client_secret")
    )


def check_credentials(broker: Target) -> Iterator[Check]:
    applications = read_applications(broker)
    if not applications:
        yield Check("credentials", FAIL, f"no application in the secret; run: {broker.command('set-credentials')}")
    for name, entry in applications.items():
        if not is_set(entry):
            yield Check(
                "credentials",
                FAIL,
                f"{name}: not set (the placeholder {PLACEHOLDER}); run: {broker.command('set-credentials')}"
                + ("" if name == "default" else f" --application {name}"),
            )
        else:
            yield client_check(broker, name, entry["client_id"].strip(), entry["client_secret"])


def client_check(broker: Target, application: str, client_id: str, client_secret: str) -> Check:
    """Apicbase's token endpoint, asked to exchange a made-up code with these credentials."""
    token_url = broker.parameters.get("ApicbaseTokenUrl", "")
    if not (token_url.startswith("https://") or is_local(token_url)):
        return Check("credentials", FAIL, f"{application}: the token URL {token_url!r} is not https")
    form = {
        "grant_type": "authorization_code",
        "code": "doctor-" + secrets.token_urlsafe(16),
        "redirect_uri": broker.outputs["CallbackUrl"],
        "client_id": client_id,
        "client_secret": client_secret,
    }
    try:
        answer = requests.post(token_url, data=form, timeout=APICBASE_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return Check("credentials", FAIL, f"{application}: cannot reach {token_url} ({type(exc).__name__})")
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if error == "invalid_grant":
        return Check("credentials", PASS, f"{application}: client {client_id} accepted by {token_url}")
    if error == "invalid_client" or answer.status_code == 401:
        return Check(
            "credentials",
            FAIL,
            f"{application}: {token_url} rejected client {client_id} (invalid_client): "
            "copy the client id and secret from the Apicbase application again",
        )
    what = f"HTTP {answer.status_code}" + (f" {error}" if isinstance(error, str) else "")
    return Check("credentials", FAIL, f"{application}: {token_url} answered {what[:80]}; cannot tell")


def check_key(broker: Target) -> Iterator[Check]:
    kms = broker.client("kms")
    key_arn = broker.outputs["TokenKeyArn"]
    state = kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"]
    rotation = kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"]
    if state != "Enabled":
        yield Check("token key", FAIL, f"{key_arn} is {state}: no stored token can be opened")
    elif not rotation:
        yield Check("token key", FAIL, f"enabled, rotation off: aws kms enable-key-rotation --key-id {key_arn}")
    else:
        yield Check("token key", PASS, "enabled, automatic rotation on")


def check_table(broker: Target) -> Iterator[Check]:
    dynamodb = broker.client("dynamodb")
    name = broker.outputs["TableName"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    indexes = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
    if table["TableStatus"] != "ACTIVE" or not indexes >= INDEXES:
        missing = ", ".join(sorted(INDEXES - indexes)) or "none"
        yield Check("table", FAIL, f"{name} is {table['TableStatus']}, indexes missing: {missing}")
        return
    recovery = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    pitr = recovery.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get("TimeToLiveStatus")
    problems = [] if pitr else ["point-in-time recovery is off (aws dynamodb update-continuous-backups ...)"]
    if ttl not in {"ENABLED", "ENABLING"}:
        problems.append("TTL is off (aws dynamodb update-time-to-live ...)")
    if problems:
        yield Check("table", WARN, f"{name}: " + "; ".join(problems))
    else:
        yield Check("table", PASS, f"{name} active, point-in-time recovery on")


def check_alarms(broker: Target) -> Iterator[Check]:
    if broker.is_local:
        yield Check("alarms", SKIP, "the local run has no CloudWatch alarms")
        return
    names = sorted(broker.of_type("AWS::CloudWatch::Alarm").values())
    alarms = [
        alarm
        for start in range(0, len(names), 100)
        for alarm in broker.client("cloudwatch").describe_alarms(AlarmNames=names[start : start + 100])["MetricAlarms"]
    ]
    if not alarms:
        yield Check("alarms", WARN, "none found in the stack")
        return
    firing = [a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM"]
    silent = [a["AlarmName"] for a in alarms if not a.get("AlarmActions")]
    if silent:
        detail = f"{len(silent)} of {len(alarms)} alarms notify nobody: deploy with AlarmTopicArn=<SNS topic>"
        yield Check("alarms", WARN, detail)
    else:
        yield Check("alarms", PASS, f"{len(alarms)} alarms, each with a destination")
    if firing:
        yield Check("alarms", WARN, f"in ALARM: {', '.join(firing)} (docs/OPERATIONS.md says what to do)")


def check_schedule(broker: Target) -> Iterator[Check]:
    if broker.is_local:
        every = broker.local.get("schedule", {}).get("every_seconds")
        yield Check("schedule", PASS if every else FAIL, f"the local run ticks every {every:g} s")
        return
    schedules = broker.of_type("AWS::Scheduler::Schedule")
    if not schedules:
        yield Check("schedule", FAIL, "no refresh schedule in the stack: tokens are refreshed on demand only")
    scheduler = broker.client("scheduler")
    for logical_id, name in schedules.items():
        schedule = scheduler.get_schedule(Name=name.rsplit("/", 1)[-1])  # a name (an ARN ends with it)
        expression = schedule.get("ScheduleExpression", "")
        if schedule.get("State") == "ENABLED":
            yield Check("schedule", PASS, f"{logical_id} enabled, {expression}")
        else:
            detail = f"{logical_id} is {schedule.get('State')}: enable it, or tokens expire unrefreshed"
            yield Check("schedule", FAIL, detail)


def check_dead_letters(broker: Target) -> Iterator[Check]:
    sqs = broker.client("sqs")
    queues = broker.of_type("AWS::SQS::Queue")
    attributes = {
        name: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for name, url in queues.items()
    }
    # The dead-letter queues are the ones some queue's redrive policy names.
    redrives = [json.loads(a["RedrivePolicy"]) for a in attributes.values() if a.get("RedrivePolicy")]
    targets = {redrive["deadLetterTargetArn"] for redrive in redrives}
    dead_letters = {name: a for name, a in attributes.items() if a.get("QueueArn") in targets}
    if not dead_letters:
        yield Check("dead letters", FAIL, "no dead-letter queue found")
    for name, a in sorted(dead_letters.items()):
        waiting = int(a.get("ApproximateNumberOfMessages", 0)) + int(a.get("ApproximateNumberOfMessagesNotVisible", 0))
        if waiting:
            yield Check(
                "dead letters",
                FAIL,
                f"{name} holds {waiting} message(s): fix the cause, then aws sqs start-message-move-task "
                f"--source-arn {a['QueueArn']} (docs/OPERATIONS.md, RefreshDeadLetterAlarm)",
            )
        else:
            yield Check("dead letters", PASS, f"{name} empty")


def check_connections(broker: Target) -> Iterator[Check]:
    api = broker.api()
    connections: list[dict[str, Any]] = []
    query = {"limit": "100"}
    while True:
        page = api.request("GET", "/connections", query=query)
        connections.extend(page["connections"])
        if not page.get("next_cursor"):
            break
        query["cursor"] = page["next_cursor"]
    stuck = sorted(c["connection_id"] for c in connections if c.get("status") == "needs_reauthorization")
    if stuck:
        shown = ", ".join(stuck[:5]) + (", ..." if len(stuck) > 5 else "")
        yield Check(
            "connections",
            WARN,
            f"{len(stuck)} of {len(connections)} need reauthorization ({shown}): apicbase-broker connect <id>",
        )
    else:
        yield Check("connections", PASS, f"{len(connections)} connection(s), none needs reauthorization")
    applications = read_applications(broker)
    unknown = sorted({c["application"] for c in connections if c.get("application")} - applications.keys())
    if unknown:
        yield Check("connections", FAIL, f"their applications {', '.join(unknown)} are not in the secret")


def check_errors(broker: Target) -> Iterator[Check]:
    if broker.is_local:
        yield Check("errors", SKIP, "the local run's functions log to its terminal")
        return
    lambda_, logs = broker.client("lambda"), broker.client("logs")
    since = int((time.time() - ERROR_WINDOW_HOURS * 3600) * 1000)
    for logical_id, name in sorted(broker.of_type("AWS::Lambda::Function").items()):
        configuration = lambda_.get_function_configuration(FunctionName=name)
        group = configuration.get("LoggingConfig", {}).get("LogGroup") or f"/aws/lambda/{name}"
        count, last = 0, None
        pages = logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, startTime=since, filterPattern=ERROR_PATTERN
        )
        try:
            for page in pages:
                for event in page.get("events", []):
                    count += 1
                    if last is None or event["timestamp"] >= last["timestamp"]:
                        last = event
                if count >= MAX_ERROR_EVENTS:
                    break
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        if last is None:
            yield Check("errors", PASS, f"{logical_id}: none in the last {ERROR_WINDOW_HOURS} h")
        else:
            at = datetime.fromtimestamp(last["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
            yield Check(
                "errors",
                WARN,
                f"{logical_id}: {count}{'+' if count >= MAX_ERROR_EVENTS else ''} in the last "
                f"{ERROR_WINDOW_HOURS} h, the last at {at}: {_message(last['message'])}",
            )


def _message(line: str) -> str:
    """A log line's message (Powertools writes JSON), on one line, shortened."""
    try:
        record = json.loads(line)
        text = str(record.get("message", line)) if isinstance(record, dict) else line
    except ValueError:
        text = line
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


CHECKS: list[tuple[str, Callable[[Target], Iterator[Check]]]] = [
    ("stack", check_stack),
    ("callback URL", check_callback_url),
    ("credentials", check_credentials),
    ("token key", check_key),
    ("table", check_table),
    ("alarms", check_alarms),
    ("schedule", check_schedule),
    ("dead letters", check_dead_letters),
    ("connections", check_connections),
    ("errors", check_errors),
]


def run_checks(broker: Target) -> list[Check]:
    results: list[Check] = []
    for name, check in CHECKS:
        try:
            results.extend(check(broker))
        except (ClientError, BotoCoreError, BrokerError, requests.RequestException, KeyError) as exc:
            results.append(Check(name, FAIL, f"could not check: {_reason(exc)}"))
        if name == "stack" and results[-1].verdict == FAIL:
            break  # without the stack's outputs, nothing else can be found
    return results


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {' '.join(str(error.get('Message', '')).split())[:160]}"
    if isinstance(exc, BrokerError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return type(exc).__name__


def render(broker: Target, results: list[Check]) -> output.Result:
    failed = sum(r.verdict == FAIL for r in results)
    warnings = sum(r.verdict == WARN for r in results)
    width = max(len(r.name) for r in results)
    lines = [f"apicbase-broker doctor: {broker.description}"]
    for r in results:
        first, *rest = r.detail.split("\n")
        lines.append(f"{r.verdict}  {r.name.ljust(width)}  {first}")
        lines += [" " * (width + 8) + more for more in rest]
    if failed:
        lines.append(f"{failed} check(s) failed, {warnings} warning(s): see the FAIL lines.")
    else:
        lines.append(f"Ready: every check passed ({warnings} warning(s)).")
    checks = [asdict(r) for r in results]
    data = {"target": broker.description, "checks": checks, "failed": failed, "warnings": warnings}
    return output.Result(data, "\n".join(lines), exit_code=1 if failed else 0)


def cmd_doctor(args: argparse.Namespace, _api: Any) -> output.Result:
    broker = target.from_args(args)
    return render(broker, run_checks(broker))


def add_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command(
        "doctor",
        cmd_doctor,
        "check a deployed stack (or the local run): a verdict per line",
        "doctor --stack-name apicbase-oauth-broker --region eu-west-1",
        "doctor --local-run",
    )
    target.add_options(sub)
    sub.set_defaults(uses_api=False)
