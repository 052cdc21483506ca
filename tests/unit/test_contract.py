"""The contract between template.yaml and the code: what CloudFormation deploys is what the code
expects (handlers, environment, routes, permissions, timeouts, the layer's pins), and the sample
events are events the deployed API would send."""

from __future__ import annotations

import base64
import fnmatch
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import pytest
from local import template as tpl

from apicbase_oauth.config import LEASE_SECONDS, TUNABLES
from tests.conftest import EVENTS, ROOT, load_event

TEMPLATE = tpl.load()
FUNCTIONS = tpl.functions(TEMPLATE)
ROUTES = tpl.http_routes(TEMPLATE)
CALLBACK_ROUTE = "GET /oauth/callback"
START_ROUTE = "GET /oauth/start"  # connect_url: sets the browser binder, then to Apicbase
# The only variable that may be set for some functions only: the queue's URL stays with the one
# function allowed to send to it. Every other variable the code reads must reach every function.
# APICBASE_BROKER_API_URL (or its older name BROKER_API_URL) is read by the layer's helper in
# integrators' own functions (consumer.py), never by the broker's; POWERTOOLS_METRICS_DISABLED is
# set by the local run only (no CloudWatch there).
ONLY_FOR = {
    "REFRESH_QUEUE_URL": {"RefreshSchedulerFunction"},
    "BROKER_API_URL": set(),
    "APICBASE_BROKER_API_URL": set(),
    "POWERTOOLS_METRICS_DISABLED": set(),
    "EVENTS_DEAD_LETTER_QUEUE_URL": {"ConnectionEventsFunction"},
}
ENV_READ = re.compile(
    r"""(?:env\.get|required|url|integer|os\.getenv|os\.environ\.get)\(\s*"([A-Z][A-Z0-9_]*)"|"""
    r"""os\.environ\[\s*"([A-Z][A-Z0-9_]*)"\s*\]"""
)


def variables_read_by_the_code() -> set[str]:
    sources = [*(ROOT / "layers/apicbase_oauth/apicbase_oauth").glob("*.py"), *(ROOT / "functions").glob("*/*.py")]
    scanned = {a or b for path in sources for a, b in ENV_READ.findall(path.read_text())}
    return scanned | {tunable.variable for tunable in TUNABLES.values()}


def actions(logical_id: str) -> list[str]:
    """Every IAM action a function's inline policies allow. SAM policy templates (say
    DynamoDBCrudPolicy) hide their actions, so they are refused outright."""
    found = []
    for policy in FUNCTIONS[logical_id].properties.get("Policies", []):
        assert isinstance(policy, dict) and set(policy) == {"Statement"}, f"{logical_id}: inline statements only"
        for statement in policy["Statement"]:
            if statement["Effect"] == "Allow":
                action = statement["Action"]
                found += [action] if isinstance(action, str) else action
    return found


def can(logical_id: str, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), granted.lower()) for granted in actions(logical_id))


# --- handlers and their environment ----------------------------------------------------------------
@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_handler_imports_with_its_template_environment(load_handler, logical_id: str) -> None:
    """Given the environment the template gives a function, when its module is imported as
    Lambda would, then it builds its settings and its Handler is callable."""
    module = load_handler(logical_id)

    assert callable(getattr(module, FUNCTIONS[logical_id].handler_name))
    assert module.DEPS.settings.lease_seconds == LEASE_SECONDS


def test_every_variable_the_code_reads_is_set_for_every_function() -> None:
    """Given the variables read in the layer and the handlers, then the template sets each of
    them for every function (the queue's URL for the scheduler only), so that no setting is
    silently left at a code default that disagrees with a template parameter."""
    read = variables_read_by_the_code()

    assert {"TABLE_NAME", "APICBASE_TOKEN_URL", "REFRESH_WINDOW_HOURS"} <= read  # the scan still finds them
    for name in sorted(read):
        expected = ONLY_FOR.get(name, set(FUNCTIONS))
        missing = sorted(fn for fn in expected if name not in FUNCTIONS[fn].environment)
        assert not missing, f"{name} is read by the code but not set for {missing}"


def test_the_template_sets_no_variable_the_code_ignores() -> None:
    """Given the template's variables, then each is read by the code or is Powertools' own."""
    read = variables_read_by_the_code()

    for fn in FUNCTIONS.values():
        for name in fn.environment:
            assert name in read or name.startswith("POWERTOOLS_"), f"{fn.logical_id} sets unused {name}"


def test_the_event_is_never_logged() -> None:
    """The callback's event holds the code and the state: Powertools must never log events."""
    for fn in FUNCTIONS.values():
        assert fn.environment["POWERTOOLS_LOGGER_LOG_EVENT"] == "false", fn.logical_id


def test_the_lease_outlives_every_function() -> None:
    """A refresh lease that expired while its holder still ran would let a second refresher
    present the same refresh token; so the lease exceeds every function's timeout."""
    default = TEMPLATE["Globals"]["Function"]["Timeout"]
    timeouts = {fn.logical_id: fn.properties.get("Timeout", default) for fn in FUNCTIONS.values()}

    assert all(isinstance(seconds, int) for seconds in timeouts.values()), timeouts
    assert max(timeouts.values()) < LEASE_SECONDS, timeouts


def test_the_layer_pins_the_powertools_the_tests_run() -> None:
    """The layer's requirements pin aws-lambda-powertools exactly, to the version tested here."""
    lines = (ROOT / "layers/apicbase_oauth/requirements.txt").read_text().splitlines()

    pins = [line for line in lines if line.startswith("aws-lambda-powertools")]
    assert pins == [f"aws-lambda-powertools=={importlib.metadata.version('aws-lambda-powertools')}"]


# --- routes and permissions ---------------------------------------------------------------------
def test_only_the_callback_and_its_start_are_public() -> None:
    """Every admin route needs SigV4 (AWS_IAM), including any route added without an Auth block;
    the callback and connect_url's start route are the only routes without an authorizer."""
    authorizers = {route.route_key: route.authorizer for route in ROUTES}

    assert TEMPLATE["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    assert authorizers.pop(CALLBACK_ROUTE) == "NONE"
    assert authorizers.pop(START_ROUTE) == "NONE"
    assert authorizers and set(authorizers.values()) == {"AWS_IAM"}


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.route_key)
def test_every_template_route_is_served_by_its_handler(load_handler, lambda_context, route) -> None:
    """Given a request on a route the template declares, then the function behind it has a
    matching route (whatever it answers, it is not 'no such route')."""
    module = load_handler(route.function)
    path = route.path.replace("{connection_id}", "lib-unknown")
    event = load_event("admin_get_connection.json")
    event.update(routeKey=route.route_key, rawPath=path, pathParameters={"connection_id": "lib-unknown"})
    event["requestContext"]["http"].update(method=route.method, path=path)

    answer = module.lambda_handler(event, lambda_context)

    assert answer["statusCode"] != 404 or "connection_not_found" in answer["body"]
    assert "route_not_found" not in answer["body"]


def test_the_public_callback_can_seal_but_never_open_tokens() -> None:
    assert can("CallbackFunction", "kms:GenerateDataKey")
    assert not can("CallbackFunction", "kms:Decrypt")


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_function_can_scan_the_table(logical_id: str) -> None:
    """Listing and scheduling use Queries on indexes; a Scan would read every token item."""
    assert not can(logical_id, "dynamodb:Scan")


# --- sample events ----------------------------------------------------------------------------------
HTTP_EVENTS = sorted([*EVENTS.glob("callback*.json"), *EVENTS.glob("admin_*.json")])


@pytest.mark.parametrize("path", HTTP_EVENTS, ids=lambda path: path.name)
def test_every_sample_event_is_one_the_api_would_send(path: Path) -> None:
    """Given a sample event, then it is payload 2.0 for a template route, its path fits the
    route, and only the admin routes carry an IAM caller."""
    event: dict[str, Any] = json.loads(path.read_text())
    route = next(r for r in ROUTES if r.route_key == event["routeKey"])
    http = event["requestContext"]["http"]

    assert event["version"] == "2.0"
    assert event["requestContext"]["routeKey"] == event["routeKey"]
    # An ANY route's events carry the request's own method.
    assert (http["method"] if route.method != "ANY" else "ANY", http["path"]) == (route.method, event["rawPath"])
    match = route.pattern().match(event["rawPath"])
    assert match and match.groupdict() == (event.get("pathParameters") or {})
    has_caller = "userArn" in event["requestContext"].get("authorizer", {}).get("iam", {})
    assert has_caller is (route.authorizer == "AWS_IAM")
    if "body" in event:
        body = base64.b64decode(event["body"]).decode() if event["isBase64Encoded"] else event["body"]
        assert isinstance(json.loads(body), dict)


# --- tunables: one table in the code, the template's parameters held to it --------------------------
@pytest.mark.parametrize("key", sorted(k for k, t in TUNABLES.items() if t.parameter))
def test_the_template_s_parameter_defaults_and_ranges_are_the_code_s(key: str) -> None:
    """Given a tunable the template sets through a parameter, then the parameter's Default and its
    MinValue/MaxValue (where it has them) are the code's, and it reaches the code's variable: a
    default changes in config.TUNABLES and in template.yaml, and this test holds the two together."""
    tunable = TUNABLES[key]
    assert tunable.parameter is not None
    parameter = TEMPLATE["Parameters"][tunable.parameter]

    assert int(parameter["Default"]) == tunable.default
    assert int(parameter.get("MinValue", tunable.low)) == tunable.low
    assert int(parameter.get("MaxValue", tunable.high)) == tunable.high
    for function in FUNCTIONS.values():
        assert function.environment[tunable.variable] == {"Ref": tunable.parameter}


@pytest.mark.parametrize(
    "parameter", ["RefreshWindowHours", "ApicbaseRateLimitPerMinute", "ApicbaseRefreshReadTimeout"]
)
def test_the_local_run_checks_the_template_s_ranges(parameter: str) -> None:
    """Given a parameter the local run's environment sets, then it accepts the template's range
    and refuses one past it: the local run keeps no range of its own."""
    from local.stack import PARAMETER_SETTINGS, Config, StartupError  # noqa: PLC0415 (starts nothing)

    bounds = TEMPLATE["Parameters"][parameter]
    variable = PARAMETER_SETTINGS[parameter]
    Config.from_env({variable: str(bounds["MinValue"])})
    Config.from_env({variable: str(bounds["MaxValue"])})
    with pytest.raises(StartupError, match=variable):
        Config.from_env({variable: str(bounds["MaxValue"] + 1)})
