"""Admin API (AWS_IAM): connect sessions, connections, tokens.

Each route parses its HTTP input into typed arguments (``edge.checks``, ``edge.gateway``), calls
one use case, and renders the model it returns (``edge.answers``); errors become answers in one
exception handler. Which route each function serves is the edge's route table (``edge.routes``);
the dispatch is our own, not Powertools' resolver: importing its event handler package cost this
function's cold start more than everything else it imports (docs/BENCHMARKS.md).
"""

import base64
import json
import math
import re
from collections.abc import Callable
from typing import Any

from apicbase_oauth import admin, connect, deps, proxy, tokens
from apicbase_oauth.config import Settings
from apicbase_oauth.edge import answers, checks, forwarding, gateway, routes
from apicbase_oauth.errors import BrokerError, InvalidRequest, OverBudget, RateLimited
from apicbase_oauth.observability import API_GATEWAY_HTTP, LambdaContext, logger, metrics

DEPS = deps.build(Settings.from_env())
PROXY = proxy.build(DEPS)
MAX_BODY_BYTES = 16 * 1024
MAX_CURSOR_LENGTH = 1024
NO_STORE = {"Cache-Control": "no-store"}
JSON = "application/json"
# What a path parameter may hold (Powertools' resolver took the same): one outside it is no route.
PATH_PARAMETER = re.compile(r"[-._~()'!*:@,;=+&$%<> \[\]{}|^\w]+")
Answer = dict[str, Any]


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    headers = {**NO_STORE, **(headers or {}), "Content-Type": JSON}
    return {"statusCode": status, "headers": headers, "body": json.dumps(payload), "isBase64Encoded": False}


def _body(event: dict, *, required: set[str], optional: set[str]) -> Any:
    raw = event.get("body") or ""
    try:
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode("utf-8")
    except ValueError:  # base64 that is invalid, or decodes to bytes that are not UTF-8
        raise InvalidRequest("the request body is not valid base64 of UTF-8 text", code="invalid_body") from None
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise InvalidRequest("the request body is larger than 16 KiB", code="body_too_large")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None
    return answers.body_fields(body, required=required, optional=optional)


def _query(event: dict, name: str) -> str | None:
    return (event.get("queryStringParameters") or {}).get(name)


def create_connect_session(event: dict) -> Answer:
    fields = _body(
        event, required={"connection_id"}, optional={"scopes", "return_url", "application", "expected_username"}
    )
    started = connect.start_connect_session(
        DEPS,
        checks.connection_id(fields["connection_id"]),
        scopes=checks.scopes(fields.get("scopes")),
        return_url=checks.return_url(fields.get("return_url")),
        application=checks.application(fields.get("application")),
        expected_username=checks.expected_username(fields.get("expected_username")),
        redirect_uri=gateway.redirect_uri(
            DEPS.settings.callback_url, (event.get("requestContext") or {}).get("domainName")
        ),
    )
    return _json(201, answers.session_view(started))


def list_connections(event: dict) -> Answer:
    raw_limit = _query(event, "limit")  # absent: 50; present, even empty: checked
    limit = 50 if raw_limit is None else checks.whole_number(raw_limit, name="limit", low=1, high=100)
    cursor = _query(event, "cursor")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor")
    return _json(200, answers.page_view(admin.list_connections(DEPS, limit=limit, cursor=cursor)))


def describe_connection(event: dict, connection_id: str) -> Answer:
    introspect = answers.flag(_query(event, "introspect"), "introspect")
    connection = admin.describe_connection(DEPS, gateway.path_id(connection_id))
    view = answers.connection_view(connection)
    if introspect:
        view["introspection"] = answers.introspection_view(admin.introspect_connection(DEPS, connection))
    return _json(200, view)


def delete_connection(event: dict, connection_id: str) -> Answer:
    return _json(200, answers.disconnection_view(admin.disconnect(DEPS, gateway.path_id(connection_id))))


def get_token(event: dict, connection_id: str) -> Answer:
    return _json(200, answers.token_view(tokens.get_token(DEPS, gateway.path_id(connection_id)), DEPS.now()))


def replace_rejected_token(event: dict, connection_id: str) -> Answer:
    """A token Apicbase answered 401 to: a newer one, refreshing only if the broker still holds it."""
    connection_id = gateway.path_id(connection_id)
    fields = _body(event, required={"rejected_token"}, optional=set())
    rejected = checks.token(fields["rejected_token"], "rejected_token")
    return _json(200, answers.token_view(tokens.replace_rejected_token(DEPS, connection_id, rejected), DEPS.now()))


def refresh(event: dict, connection_id: str) -> Answer:
    return _json(200, answers.refresh_view(admin.force_refresh(DEPS, gateway.path_id(connection_id))))


def exchange_code(event: dict, connection_id: str) -> Answer:
    connection_id = gateway.path_id(connection_id)
    fields = _body(event, required={"code"}, optional={"application", "redirect_uri"})
    connection = connect.exchange_pasted_code(
        DEPS,
        connection_id,
        code=checks.authorization_code(fields["code"]),
        application=checks.application(fields.get("application")),
        redirect_uri=checks.return_url(fields.get("redirect_uri")),
    )
    return _json(201, answers.connection_view(connection))


def import_tokens(event: dict, connection_id: str) -> Answer:
    connection_id = gateway.path_id(connection_id)
    fields = _body(event, required={"access_token", "refresh_token"}, optional={"expires_in", "application"})
    connection = connect.import_tokens(
        DEPS,
        connection_id,
        access_token=checks.token(fields["access_token"], "access_token"),
        refresh_token=checks.token(fields["refresh_token"], "refresh_token"),
        expires_in=checks.expires_in(fields.get("expires_in")),
        application=checks.application(fields.get("application")),
    )
    return _json(200, answers.connection_view(connection))


def proxy_apicbase(event: dict) -> Answer:
    """ANY /connections/{id}/apicbase/{proxy+}, apart from the table: its path spans segments and
    its answers are Apicbase's (bytes, headers), not this API's JSON."""
    try:
        request = forwarding.request_from_event(event, DEPS.settings.api_url)
        return forwarding.lambda_answer(PROXY.forward(request), head=request.method == "HEAD")
    except BrokerError as exc:
        return broker_error(exc)
    except Exception as exc:
        return unexpected_error(exc)


def broker_error(exc: BrokerError) -> Answer:
    status = answers.status_of(exc)
    logger.info("admin request failed", error=exc.code, status=status)
    headers = {"Retry-After": "5"} if status == 503 else None
    if isinstance(exc, (OverBudget, RateLimited)):
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    return _json(status, {"error": {"code": exc.code, "message": exc.message}}, headers)


def unexpected_error(exc: Exception) -> Answer:
    logger.error("admin request crashed", error_type=type(exc).__name__)
    return _json(500, {"error": {"code": "internal_error", "message": "unexpected error; see the logs"}})


HANDLERS = routes.bind(
    routes.CONNECTIONS,
    {
        handler.__name__: handler
        for handler in (
            create_connect_session,
            list_connections,
            describe_connection,
            delete_connection,
            get_token,
            replace_rejected_token,
            refresh,
            exchange_code,
            import_tokens,
            proxy_apicbase,
        )
    },
)
# The proxy route is served apart: its path spans segments and its answers are Apicbase's.
PROXY_ROUTE_KEY = next(route.route_key for route, handler in HANDLERS.items() if handler is proxy_apicbase)
ROUTES: dict[str, Callable[..., Answer]] = {
    route.route_key: handler for route, handler in HANDLERS.items() if handler is not proxy_apicbase
}


def route(event: dict) -> tuple[Callable[..., Answer], dict[str, str]] | None:
    """The route of the request's method and raw path, and its path parameters (raw segments)."""
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
    segments = str(event.get("rawPath") or "").split("/")
    for key, handler in ROUTES.items():
        route_method, path = key.split(" ")
        pattern = path.split("/")
        if route_method != method or len(pattern) != len(segments):
            continue
        parameters = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{"):
                if not PATH_PARAMETER.fullmatch(got):
                    break
                parameters[want[1:-1]] = got
            elif want != got:
                break
        else:
            return handler, parameters
    return None


@logger.inject_lambda_context(correlation_id_path=API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> Answer:
    DEPS.bind(context)
    caller = (((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}).get("userArn")
    logger.append_keys(caller=caller)
    if event.get("routeKey") == PROXY_ROUTE_KEY and _whole_path(event):
        return proxy_apicbase(event)
    found = route(event) if _whole_path(event) else None
    if found is None:
        return _json(404, {"error": {"code": "route_not_found", "message": "no such route"}})
    handler, parameters = found
    try:
        return handler(event, **parameters)
    except BrokerError as exc:
        return broker_error(exc)
    except Exception as exc:
        return unexpected_error(exc)


def _whole_path(event: dict) -> bool:
    """A path with whitespace or a control character is no route at all: '/connections/x\n'
    must not reach connection 'x'."""
    path = str(event.get("rawPath") or "")
    # Of the whitespace characters only the space is printable: one C loop, not a Python one.
    return path.isprintable() and " " not in path
