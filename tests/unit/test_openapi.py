"""The edge's route table is template.yaml's HttpApi, and docs/openapi.yaml describes exactly it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from local import template as tpl
from openapi_spec_validator import validate

from apicbase_oauth.edge.routes import ROUTES

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
# API Gateway's extension for an ANY route (OpenAPI has no such method).
ANY_METHOD = "x-amazon-apigateway-any-method"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def operations(spec: dict) -> dict[tuple[str, str], dict]:
    return {
        ("ANY" if method == ANY_METHOD else method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS or method == ANY_METHOD
    }


def test_the_document_is_valid_openapi(spec):
    validate(spec)


def test_the_route_table_is_the_template_s_http_api(template):
    # Given the edge's route table and the HttpApi events of the template
    served = {(r.method, r.path, r.function, r.authorizer) for r in ROUTES}
    # Then each route is declared once, for the same function and with the same authorizer
    assert len(served) == len(ROUTES)
    assert served == tpl.http_events(template)


def test_every_route_s_handler_is_defined_by_its_function(template):
    # Given the function modules of the template
    functions = tpl.functions(template)
    # Then the handler the table names is a function of the module that serves the route
    for route in ROUTES:
        assert f"\ndef {route.handler}(" in functions[route.function].module_path.read_text(), route.route_key


def test_every_route_is_documented_and_nothing_else(spec):
    # Given the route table and the operations of the document
    routes = {(r.method, r.path) for r in ROUTES}
    # Then they are the same set (method and path)
    assert set(operations(spec)) == routes


def test_path_parameters_have_the_template_s_names(spec):
    # Then every {name} in a path is declared as a path parameter of that name, and no other
    shared = spec["components"]["parameters"]
    for path, item in spec["paths"].items():
        params = [shared[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p for p in item.get("parameters", [])]
        declared = {p["name"] for p in params if p["in"] == "path" and p["required"]}
        assert set(re.findall(r"\{(\w+\+?)\}", path)) == declared, path


def test_admin_routes_need_sigv4_and_the_callback_none(spec):
    # Given the table's authorizer per route
    auth = {(r.method, r.path): r.authorizer for r in ROUTES}
    scheme = spec["components"]["securitySchemes"]["sigv4"]
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"
    # Then a route is signed in the document exactly when the template puts IAM on it
    for key, op in operations(spec).items():
        security = op.get("security", spec["security"])
        assert (security == [{"sigv4": []}]) == (auth[key] == "AWS_IAM"), key


def test_every_operation_documents_its_errors(spec):
    # Then each admin operation has a default error response besides its success
    for key, op in operations(spec).items():
        assert "default" in op["responses"], key
