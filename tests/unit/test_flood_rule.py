"""The optional flood rule of the public callback (parameter CallbackRateLimitPerIp), read from
template.yaml, off and on: a REST API stage with the callback alone, behind a regional WAF web ACL
whose rate rule blocks one address over the limit, and the callback URL pointing at it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from local import template as tpl

from apicbase_oauth.edge import pages
from tests.binding import open_in_browser
from tests.conftest import load_event

CONDITION = "HasCallbackRateLimit"
PARAMETER = "CallbackRateLimitPerIp"
REST_TYPES = {
    "AWS::ApiGateway::RestApi",
    "AWS::ApiGateway::Resource",
    "AWS::ApiGateway::Method",
    "AWS::ApiGateway::Deployment",
    "AWS::ApiGateway::Stage",
    "AWS::Lambda::Permission",
    "AWS::WAFv2::WebACL",
    "AWS::WAFv2::WebACLAssociation",
}


def _flood_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] in REST_TYPES}


def _only(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    (resource,) = tpl.resources_of_type(template, type_name).values()
    return resource["Properties"]


def _refs(on: bool) -> dict[str, str]:
    return {
        "AWS::Region": "eu-west-1",
        "AWS::URLSuffix": "amazonaws.com",
        "HttpApi": "httpapi1",
        "CallbackRestApi": "restapi1",
        "CallbackRestStage": "public",
        "CallbackUrlOverride": "",
        "CustomDomainName": "",
        f"Condition:{CONDITION}": "true" if on else "false",
    }


def test_the_flood_rule_is_off_by_default_and_all_of_it_hangs_on_one_condition(template) -> None:
    """Given the template's defaults, then CallbackRateLimitPerIp is 0, the condition is "not 0",
    and every resource of the rule (REST API, stage, permission, web ACL, association) carries it,
    so a default stack has none of them (nor their cost)."""
    assert template["Parameters"][PARAMETER]["Default"] == "0"
    assert template["Conditions"][CONDITION] == {"Fn::Not": [{"Fn::Equals": [{"Ref": PARAMETER}, "0"]}]}
    resources = _flood_resources(template)
    assert {r["Type"] for r in resources.values()} == REST_TYPES
    assert {name: r.get("Condition") for name, r in resources.items()} == {name: CONDITION for name in resources}


def test_the_rest_api_serves_the_callback_alone_without_auth_to_the_callback_function(template) -> None:
    """Given the REST API, then it has exactly one method, GET /oauth/callback, unauthenticated (the
    one-time state authorizes it), proxied to the CallbackFunction; Lambda lets only that method of
    that API invoke the function."""
    resources = tpl.resources_of_type(template, "AWS::ApiGateway::Resource")
    parts = {name: r["Properties"] for name, r in resources.items()}

    def path(name: str) -> str:
        parent = parts[name]["ParentId"]
        prefix = path(parent["Ref"]) if "Ref" in parent else ""
        return f"{prefix}/{parts[name]['PathPart']}"

    method = _only(template, "AWS::ApiGateway::Method")
    assert (method["HttpMethod"], path(method["ResourceId"]["Ref"]), method["AuthorizationType"]) == (
        "GET",
        "/oauth/callback",
        "NONE",
    )
    integration = method["Integration"]
    assert (integration["Type"], integration["IntegrationHttpMethod"]) == ("AWS_PROXY", "POST")
    assert "${CallbackFunction.Arn}" in integration["Uri"]["Fn::Sub"]
    permission = _only(template, "AWS::Lambda::Permission")
    assert permission["FunctionName"] == {"Ref": "CallbackFunction"}
    assert permission["SourceArn"]["Fn::Sub"].endswith("${CallbackRestApi}/${CallbackRestStage}/GET/oauth/callback")


def test_the_web_acl_blocks_an_address_over_the_limit_on_the_callback_stage(template) -> None:
    """Given the web ACL, then it is regional, allows by default, and has one rule: a rate-based
    block per source address at the parameter's limit per 60-second window; it is associated with
    the callback's stage; and it keeps no sampled request (a sample holds the code and the state)."""
    acl = _only(template, "AWS::WAFv2::WebACL")
    assert (acl["Scope"], acl["DefaultAction"]) == ("REGIONAL", {"Allow": {}})
    (rule,) = acl["Rules"]
    assert rule["Statement"] == {
        "RateBasedStatement": {"Limit": {"Ref": PARAMETER}, "EvaluationWindowSec": 60, "AggregateKeyType": "IP"}
    }
    assert "Block" in rule["Action"]
    assert [c["SampledRequestsEnabled"] for c in (acl["VisibilityConfig"], rule["VisibilityConfig"])] == [False] * 2
    association = _only(template, "AWS::WAFv2::WebACLAssociation")
    assert association["WebACLArn"] == {"Fn::GetAtt": ["CallbackWebAcl", "Arn"]}
    assert association["ResourceArn"]["Fn::Sub"].endswith("/restapis/${CallbackRestApi}/stages/${CallbackRestStage}")


def test_the_rest_stage_throttles_what_waf_lets_through_like_the_http_api(template) -> None:
    """Given the REST stage, then its throttle is the HTTP API's route throttle, for all methods."""
    stage = _only(template, "AWS::ApiGateway::Stage")
    http = tpl.resource(template, "HttpApi")["Properties"]["DefaultRouteSettings"]
    (settings,) = stage["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (
        http["ThrottlingRateLimit"],
        http["ThrottlingBurstLimit"],
    )


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (True, "https://restapi1.execute-api.eu-west-1.amazonaws.com/public/oauth/callback"),
        (False, "https://httpapi1.execute-api.eu-west-1.amazonaws.com/oauth/callback"),
    ],
    ids=["on", "off"],
)
def test_the_callback_url_points_at_the_protected_route_when_the_rule_is_on(template, on, expected) -> None:
    """Given the rule on (off), then the CallbackUrl output is the REST stage's callback (the HTTP
    API's), and the redirect_uri the functions send to Apicbase is the same (off, they use the admin
    request's own domain, which is the HTTP API's)."""
    refs = _refs(on)
    output = tpl.resolve(template["Outputs"]["CallbackUrl"]["Value"], refs)
    env = tpl.resolve(tpl.functions(template)["ConnectionsFunction"].environment["CALLBACK_URL"], refs)
    assert output == expected
    assert env == (expected if on else "")


def test_the_callback_handler_answers_the_rest_stage_payload_1_0(load_handler, deps, apicbase, lambda_context):
    """Given a connect session and a REST API (payload 1.0) callback event with its code and state,
    when the callback handler runs, then the connection is stored and the page says so."""
    module = load_handler("CallbackFunction")
    module.DEPS = deps
    state, binder = open_in_browser(deps, "lib-rest")
    query = {"code": apicbase.issue_code(), "state": state}
    http = load_event("callback.json")
    http["headers"] = {**http["headers"], "cookie": f"{pages.BINDER_COOKIE}={binder}"}
    event = {
        "resource": "/oauth/callback",
        "path": "/oauth/callback",
        "httpMethod": "GET",
        "headers": http["headers"],
        "multiValueHeaders": {k: [v] for k, v in http["headers"].items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/oauth/callback",
            "httpMethod": "GET",
            "path": "/public/oauth/callback",
            "stage": "public",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "198.51.100.7"},
        },
        "body": None,
        "isBase64Encoded": False,
    }

    response = module.lambda_handler(event, lambda_context)

    assert response["statusCode"] == 200, json.dumps(response)[:300]
    assert deps.connections.get("lib-rest").status == "active"
