"""A deployed stack as ``doctor`` and ``set-credentials`` find it, in moto: the resources the
``aws`` fixture built from template.yaml, plus what that fixture leaves out (the alarms, the
schedule, a function), created as CloudFormation would from the template's properties."""

from __future__ import annotations

from typing import Any

from local import state as local_state
from local import template as tpl

from apicbase_broker_cli import target
from tests.conftest import CALLBACK_URL

STACK = "broker-under-test"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:broker-alarms"
FUNCTION = "RefreshWorkerFunction"


def alarms(session: Any, template: dict[str, Any], topic: str | None) -> dict[str, tuple[str, str]]:
    """The template's alarms, as CloudFormation creates them (with AlarmTopicArn set, or not)."""
    cloudwatch, resources = session.client("cloudwatch"), {}
    for logical_id, alarm in tpl.resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        name = f"{STACK}-{logical_id}-X1"
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmActions=[topic] if topic else [],
            **{k: properties[k] for k in ("Namespace", "MetricName", "Statistic", "Period", "EvaluationPeriods")},
            **{k: properties[k] for k in ("Threshold", "ComparisonOperator")},
        )
        resources[logical_id] = ("AWS::CloudWatch::Alarm", name)
    return resources


def function_and_schedule(session: Any, template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The worker's function (its code does not matter: doctor reads its logs) and the scheduler's
    ScheduleV2 event, as SAM translates it."""
    role = session.client("iam").create_role(RoleName="worker", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    function = session.client("lambda").create_function(
        FunctionName=f"{STACK}-{FUNCTION}", Runtime="python3.13", Role=role, Handler="app.lambda_handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
    )  # fmt: skip
    tick = tpl.functions(template)["RefreshSchedulerFunction"].events["Tick"]["Properties"]
    session.client("scheduler").create_schedule(
        Name=f"{STACK}-Tick",
        ScheduleExpression=tpl.parameter_defaults(template)[tick["ScheduleExpression"]["Ref"]],
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": function["FunctionArn"], "RoleArn": role},
    )
    return {
        FUNCTION: ("AWS::Lambda::Function", function["FunctionName"]),
        "RefreshSchedulerFunctionTick": ("AWS::Scheduler::Schedule", f"{STACK}-Tick"),
    }


def stack(aws: Any, template: dict[str, Any], api_url: str) -> target.Target:
    """Outputs and parameters as the template makes them, the resources moto holds, the admin
    API at ``api_url``; the alarms notify TOPIC."""
    created = {name: spec["Type"] for name, spec in template["Resources"].items() if name in aws.refs}
    resources = {name: (kind, aws.refs[name]) for name, kind in created.items()}
    resources |= alarms(aws.session, template, TOPIC) | function_and_schedule(aws.session, template)
    parameters = {k: v for k, v in aws.refs.items() if k in template["Parameters"]}
    outputs = {**local_state.outputs(template, aws.refs), "ApiUrl": api_url, "CallbackUrl": CALLBACK_URL}
    return target.Target(f"stack {STACK}", outputs, parameters, resources, aws.session, status="UPDATE_COMPLETE")
