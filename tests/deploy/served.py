"""A stack's HTTP API in this process: requests (``requests``, through ``responses``) to its
execute-api host become API Gateway's payload 2.0 events for the handlers of the functions
CloudFormation created, each imported with the environment moto's Lambda holds for it."""

from __future__ import annotations

import re
import uuid
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from local import template as tpl
from local.adapter import build_event, http_response, match
from local.lambda_context import LambdaContext

from apicbase_oauth import observability

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


class ServedStack:
    def __init__(
        self,
        created: dict[str, Any],
        template: dict[str, Any],
        http: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.api_url = created["outputs"]["ApiUrl"]
        self.routes = tpl.http_routes(template)
        lambda_ = created["session"].client("lambda")
        self.handlers: dict[str, ModuleType] = {}
        for logical_id in sorted({route.function for route in self.routes}):
            configuration = lambda_.get_function_configuration(FunctionName=created["physical"][logical_id])
            for name, value in configuration["Environment"]["Variables"].items():
                monkeypatch.setenv(name, str(value))  # moto keeps a Number parameter's value as an int
            # A container reads the namespace when it creates Metrics (as tests/conftest.py's loader).
            monkeypatch.setattr(observability.metrics, "namespace", configuration["Environment"]["Variables"].get(
                "POWERTOOLS_METRICS_NAMESPACE", observability.metrics.namespace
            ))  # fmt: skip
            module = tpl.functions(template)[logical_id].import_module(f"stack_{logical_id}_{uuid.uuid4().hex[:8]}")
            self.handlers[logical_id] = module
        host = re.escape(urlsplit(self.api_url).netloc)
        for method in HTTP_METHODS:
            http.add_callback(method, re.compile(rf"https://{host}/.*"), callback=self._serve)

    def _serve(self, request: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(request.url)
        found = match(self.routes, request.method, parts.path)
        assert found is not None, f"no route for {request.method} {parts.path}"
        route, path_parameters = found
        body = request.body or b""
        event = build_event(
            route,
            path_parameters,
            method=request.method,
            raw_path=parts.path,
            raw_query=parts.query,
            # urllib3 would add Host; API Gateway answers on https only.
            headers=[("host", parts.netloc), ("x-forwarded-proto", "https"), *request.headers.items()],
            body=body.encode() if isinstance(body, str) else body,
            source_ip="203.0.113.7",
        )
        answer = self.handlers[route.function].lambda_handler(event, LambdaContext(timeout_seconds=60))
        return http_response(answer)
