"""The template's alarms, dashboard and custom domain against what the code really emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from local import template as tpl

from tests.conftest import load_event

ROOT = Path(__file__).resolve().parents[2]
ALARM = "AWS::CloudWatch::Alarm"


def emitted_metric_names() -> set[str]:
    """Every metric name passed to add_metric in the layer and the handlers."""
    names: set[str] = set()
    for path in [*ROOT.glob("layers/apicbase_oauth/apicbase_oauth/**/*.py"), *ROOT.glob("functions/*/app.py")]:
        for name in re.findall(r'add_metric\(name=f?"([^"]+)"', path.read_text()):
            # Callback{exc.status // 100}xx: the callback answers 4xx and 5xx.
            names.update({re.sub(r"\{[^}]+\}", d, name) for d in "45"} if "{" in name else {name})
    return names


def namespace(template) -> str:
    return template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]


def broker_alarms(template) -> dict:
    alarms = tpl.resources_of_type(template, ALARM)
    return {k: v["Properties"] for k, v in alarms.items() if v["Properties"]["Namespace"] == namespace(template)}


def test_alarms_use_exactly_the_dimensions_the_emf_output_carries(load_handler, lambda_context, template, capsys):
    # Given the EMF line a handler prints when it counts something (a callback with a bad state)
    app = load_handler("CallbackFunction")
    event = load_event("callback.json")
    event["queryStringParameters"] = {"code": "abc", "state": "not-a-state"}
    capsys.readouterr()
    app.lambda_handler(event, lambda_context)
    emf = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"'))
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    dimensions = {name: emf[name] for name in directive["Dimensions"][0]}
    # Then every alarm on the broker's namespace names exactly that namespace and those dimensions
    assert directive["Namespace"] == namespace(template)
    alarms = broker_alarms(template)
    assert alarms
    for props in alarms.values():
        assert {d["Name"]: d["Value"] for d in props["Dimensions"]} == dimensions


def test_every_alarmed_custom_metric_is_emitted_by_the_code(template):
    # Given the metric names the code emits, Then every custom-metric alarm watches one of them
    emitted = emitted_metric_names()
    assert {p["MetricName"] for p in broker_alarms(template).values()} <= emitted


@pytest.mark.parametrize("metric", ["ReauthorizationRequired", "InvalidClient", "RotatedTokenNotStored", "Callback5xx"])
def test_the_issue_s_metrics_are_alarmed(template, metric):
    # Then each metric the operators must hear about has an alarm
    assert metric in {p["MetricName"] for p in broker_alarms(template).values()}


def test_every_emitted_metric_is_documented():
    # Given docs/METRICS.md, Then each emitted metric has a row
    documented = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "METRICS.md").read_text(), re.MULTILINE))
    assert emitted_metric_names() <= documented


def test_every_alarm_notifies_the_optional_topic(template):
    # Then every alarm sends to AlarmTopicArn only when the parameter is set
    expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for props in (r["Properties"] for r in tpl.resources_of_type(template, ALARM).values()):
        assert props["AlarmActions"] == expected
        assert props["OKActions"] == expected


def test_the_dashboard_body_is_json_with_the_broker_metrics(template):
    # Given the dashboard body with its ${...} substitutions filled in
    body = tpl.resource(template, "Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    # Then it is valid JSON and charts every custom metric the code emits
    charted = {m[1] for w in widgets for m in w["properties"]["metrics"] if m[0] == "ApicbaseOAuthBroker"}
    assert emitted_metric_names() <= charted


@pytest.mark.parametrize(
    ("override", "domain", "expected"),
    [
        ("", "", ""),
        ("", "oauth.example.com", "https://oauth.example.com/oauth/callback"),
        ("https://other.example.com/cb", "oauth.example.com", "https://other.example.com/cb"),
    ],
)
def test_callback_url_follows_the_custom_domain(template, override, domain, expected):
    # Given the parameters as CloudFormation would evaluate the conditions
    refs = {
        "CallbackUrlOverride": override,
        "CustomDomainName": domain,
        "Condition:HasCallbackUrlOverride": str(bool(override)).lower(),
        "Condition:HasCustomDomain": str(bool(domain)).lower(),
    }
    # When the functions' CALLBACK_URL is resolved
    value = template["Globals"]["Function"]["Environment"]["Variables"]["CALLBACK_URL"]
    # Then it is the override, else the custom domain's callback, else empty (the request's domain)
    assert tpl.resolve(value, refs) == expected


def test_the_custom_domain_resources_exist_only_with_the_condition(template):
    # Then the domain and its mapping are conditional, and the mapping targets the HttpApi
    domain = tpl.resource(template, "CustomDomain")
    mapping = tpl.resource(template, "CustomDomainMapping")
    assert domain["Condition"] == mapping["Condition"] == "HasCustomDomain"
    assert mapping["Properties"]["ApiId"] == {"Ref": "HttpApi"}


# --- reserved concurrency: opt-in, so a new account (limit often 10) deploys with the defaults ---
RESERVATIONS = {
    "CallbackFunction": "CallbackReservedConcurrency",
    "ConnectionsFunction": "AdminReservedConcurrency",
    "RefreshSchedulerFunction": "SchedulerReservedConcurrency",
    "RefreshWorkerFunction": "WorkerReservedConcurrency",
    "ConnectionEventsFunction": "EventsReservedConcurrency",
}
NO_VALUE = object()


def condition_value(template, expression, parameters) -> bool:
    """The few condition functions the template uses, evaluated as CloudFormation does (on strings)."""
    ((name, arg),) = expression.items()
    if name == "Condition":
        return condition_value(template, template["Conditions"][arg], parameters)
    if name == "Fn::Not":
        return not condition_value(template, arg[0], parameters)
    if name == "Fn::And":
        return all(condition_value(template, a, parameters) for a in arg)
    if name == "Fn::Equals":
        left, right = (str(tpl.resolve(a, parameters)) for a in arg)
        return left == right
    raise AssertionError(f"unexpected condition function {name}")


def reserved_concurrency(template, logical_id, **overrides) -> object:
    """What CloudFormation would set as the function's ReservedConcurrentExecutions."""
    parameters = {**tpl.parameter_defaults(template), **{k: str(v) for k, v in overrides.items()}}
    refs = {**parameters, "AWS::NoValue": NO_VALUE}
    for name, expression in template["Conditions"].items():
        refs[f"Condition:{name}"] = str(condition_value(template, expression, parameters)).lower()
    return tpl.resolve(tpl.resource(template, logical_id)["Properties"]["ReservedConcurrentExecutions"], refs)


@pytest.mark.parametrize("logical_id", sorted(RESERVATIONS))
def test_no_function_reserves_concurrency_with_the_defaults(template, logical_id):
    # Given the template's defaults, Then the function reserves nothing from the account
    assert tpl.parameter_defaults(template)[RESERVATIONS[logical_id]] == "0"
    assert reserved_concurrency(template, logical_id) is NO_VALUE


@pytest.mark.parametrize("logical_id", sorted(RESERVATIONS))
def test_a_reservation_is_set_when_its_parameter_is(template, logical_id):
    # When the function's parameter is set, Then exactly that is reserved, and the others stay off
    parameter = RESERVATIONS[logical_id]
    assert reserved_concurrency(template, logical_id, **{parameter: 7}) == "7"
    others = [other for other in RESERVATIONS if other != logical_id]
    assert all(reserved_concurrency(template, other, **{parameter: 7}) is NO_VALUE for other in others)


def test_the_worker_stays_capped_by_its_queue_without_a_reservation(template):
    # Given the worker's SQS event source, Then MaximumConcurrency (no reservation needed) caps it
    # at RefreshWorkerConcurrency: Apicbase allows 100 requests per minute per user.
    source = tpl.resource(template, "RefreshWorkerFunction")["Properties"]["Events"]["Queue"]["Properties"]
    assert source["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "RefreshWorkerConcurrency"}
    assert tpl.parameter_defaults(template)["RefreshWorkerConcurrency"] == "2"
