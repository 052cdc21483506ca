"""The API Gateway stand-in: every HttpApi route of template.yaml, and API Gateway's answers."""

from __future__ import annotations

import json

import pytest
import requests
from local import template as tpl

from tests.e2e.localrun import LocalRun

pytestmark = pytest.mark.e2e

API_GATEWAY_NOT_FOUND = {"message": "Not Found"}


def is_api_gateways_404(response: requests.Response) -> bool:
    return response.status_code == 404 and response.text == json.dumps(API_GATEWAY_NOT_FOUND)


@pytest.mark.parametrize("route", tpl.http_routes(tpl.load()), ids=lambda r: r.route_key)
def test_every_template_route_reaches_its_function(local_run: LocalRun, route: tpl.Route) -> None:
    # Given a route of the template, with a connection id nobody has
    path = route.path.replace("{connection_id}", "e2e-nobody").replace("{proxy+}", "api/v1/me/")
    method = "GET" if route.method == "ANY" else route.method

    # When it is called
    response = local_run.api(method, path, json={} if method in ("POST", "PUT") else None)

    # Then the function answers, not API Gateway's "no such route"
    assert response.status_code < 500
    assert not is_api_gateways_404(response)


@pytest.mark.parametrize(("method", "path"), [("GET", "/nowhere"), ("PATCH", "/connections"), ("GET", "/oauth")])
def test_a_request_no_route_matches_gets_api_gateways_404(local_run: LocalRun, method: str, path: str) -> None:
    # When a path or method the template does not route is called
    response = local_run.api(method, path)

    # Then the answer is API Gateway's own
    assert is_api_gateways_404(response)


def test_repeated_query_keys_reach_the_function_joined_by_commas(local_run: LocalRun) -> None:
    # When a query key is repeated
    single = local_run.api("GET", "/connections?limit=2")
    repeated = local_run.api("GET", "/connections?limit=2&limit=3")

    # Then the function sees "2,3", as behind API Gateway, and refuses it as a limit
    assert single.status_code == 200
    assert repeated.status_code == 400
    assert repeated.json()["error"]["code"] == "invalid_limit"
