"""Admin API (AWS_IAM): connect sessions, connections, tokens.

Each route parses its HTTP input into typed arguments (``edge.checks``, ``edge.gateway``), calls
one use case, and renders the model it returns (``edge.answers``); errors become answers in one
exception handler. Which route each function serves is the edge's route table (``edge.routes``).
"""

import json
import math
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import admin, connect, deps, proxy, tokens
from apicbase_oauth.config import Settings
from apicbase_oauth.edge import answers, checks, forwarding, gateway, routes
from apicbase_oauth.errors import BrokerError, InvalidRequest, OverBudget, RateLimited
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())
PROXY = proxy.build(DEPS)
app = APIGatewayHttpResolver()
MAX_BODY_BYTES = 16 * 1024
MAX_CURSOR_LENGTH = 1024
NO_STORE = {"Cache-Control": "no-store"}


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(payload),
        headers={**NO_STORE, **(headers or {})},
    )


def _body(*, required: set[str], optional: set[str]) -> Any:
    try:
        raw = app.current_event.decoded_body or ""
    except ValueError:  # base64 that is invalid, or decodes to bytes that are not UTF-8
        raise InvalidRequest("the request body is not valid base64 of UTF-8 text", code="invalid_body") from None
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise InvalidRequest("the request body is larger than 16 KiB", code="body_too_large")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None
    return answers.body_fields(body, required=required, optional=optional)


def _query(name: str) -> str | None:
    return (app.current_event.query_string_parameters or {}).get(name)


def create_connect_session() -> Response:
    fields = _body(required={"connection_id"}, optional={"scopes", "return_url", "application", "expected_username"})
    started = connect.start_connect_session(
        DEPS,
        checks.connection_id(fields["connection_id"]),
        scopes=checks.scopes(fields.get("scopes")),
        return_url=checks.return_url(fields.get("return_url")),
        application=checks.application(fields.get("application")),
        expected_username=checks.expected_username(fields.get("expected_username")),
        redirect_uri=gateway.redirect_uri(DEPS.settings.callback_url, app.current_event.request_context.domain_name),
    )
    return _json(201, answers.session_view(started))


def list_connections() -> Response:
    raw_limit = _query("limit")  # absent: 50; present, even empty: checked
    limit = 50 if raw_limit is None else checks.whole_number(raw_limit, name="limit", low=1, high=100)
    cursor = _query("cursor")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor")
    return _json(200, answers.page_view(admin.list_connections(DEPS, limit=limit, cursor=cursor)))


def describe_connection(connection_id: str) -> Response:
    introspect = answers.flag(_query("introspect"), "introspect")
    connection = admin.describe_connection(DEPS, gateway.path_id(connection_id))
    view = answers.connection_view(connection)
    if introspect:
        view["introspection"] = answers.introspection_view(admin.introspect_connection(DEPS, connection))
    return _json(200, view)


def delete_connection(connection_id: str) -> Response:
    return _json(200, answers.disconnection_view(admin.disconnect(DEPS, gateway.path_id(connection_id))))


def get_token(connection_id: str) -> Response:
    return _json(200, answers.token_view(tokens.get_token(DEPS, gateway.path_id(connection_id)), DEPS.now()))


def replace_rejected_token(connection_id: str) -> Response:
    """A token Apicbase answered 401 to: a newer one, refreshing only if the broker still holds it."""
    connection_id = gateway.path_id(connection_id)
    rejected = checks.token(_body(required={"rejected_token"}, optional=set())["rejected_token"], "rejected_token")
    return _json(200, answers.token_view(tokens.replace_rejected_token(DEPS, connection_id, rejected), DEPS.now()))


def refresh(connection_id: str) -> Response:
    return _json(200, answers.refresh_view(admin.force_refresh(DEPS, gateway.path_id(connection_id))))


def exchange_code(connection_id: str) -> Response:
    connection_id = gateway.path_id(connection_id)
    fields = _body(required={"code"}, optional={"application", "redirect_uri"})
    connection = connect.exchange_pasted_code(
        DEPS,
        connection_id,
        code=checks.authorization_code(fields["code"]),
        application=checks.application(fields.get("application")),
        redirect_uri=checks.return_url(fields.get("redirect_uri")),
    )
    return _json(201, answers.connection_view(connection))


def import_tokens(connection_id: str) -> Response:
    connection_id = gateway.path_id(connection_id)
    fields = _body(required={"access_token", "refresh_token"}, optional={"expires_in", "application"})
    connection = connect.import_tokens(
        DEPS,
        connection_id,
        access_token=checks.token(fields["access_token"], "access_token"),
        refresh_token=checks.token(fields["refresh_token"], "refresh_token"),
        expires_in=checks.expires_in(fields.get("expires_in")),
        application=checks.application(fields.get("application")),
    )
    return _json(200, answers.connection_view(connection))


def proxy_apicbase(event: dict) -> dict:
    """ANY /connections/{id}/apicbase/{proxy+}, outside the resolver: its path spans segments and
    its answers are Apicbase's (bytes, headers), not this API's JSON."""
    try:
        request = forwarding.request_from_event(event, DEPS.settings.api_url)
        return forwarding.lambda_answer(PROXY.forward(request), head=request.method == "HEAD")
    except BrokerError as exc:
        answer = broker_error(exc)
    except Exception as exc:
        answer = unexpected_error(exc)
    headers = {**answer.headers, "Content-Type": answer.content_type}
    return {"statusCode": answer.status_code, "headers": headers, "body": answer.body, "isBase64Encoded": False}


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
# The proxy route is served outside the resolver: its path spans segments.
PROXY_ROUTE_KEY = next(route.route_key for route, handler in HANDLERS.items() if handler is proxy_apicbase)
for _route, _handler in HANDLERS.items():
    if _handler is not proxy_apicbase:
        app.route(_route.resolver_rule, _route.method)(_handler)


@app.exception_handler(BrokerError)
def broker_error(exc: BrokerError) -> Response:
    status = answers.status_of(exc)
    logger.info("admin request failed", error=exc.code, status=status)
    headers = {"Retry-After": "5"} if status == 503 else None
    if isinstance(exc, (OverBudget, RateLimited)):
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    return _json(status, {"error": {"code": exc.code, "message": exc.message}}, headers)


@app.exception_handler(Exception)
def unexpected_error(exc: Exception) -> Response:
    logger.error("admin request crashed", error_type=type(exc).__name__)
    return _json(500, {"error": {"code": "internal_error", "message": "unexpected error; see the logs"}})


@app.not_found
def route_not_found(exc: Exception) -> Response:
    return _json(404, {"error": {"code": "route_not_found", "message": "no such route"}})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    DEPS.bind(context)
    caller = (((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}).get("userArn")
    logger.append_keys(caller=caller)
    if not _whole_path(event):
        body = json.dumps({"error": {"code": "route_not_found", "message": "no such route"}})
        headers = {"Content-Type": content_types.APPLICATION_JSON, **NO_STORE}
        return {"statusCode": 404, "headers": headers, "body": body, "isBase64Encoded": False}
    if event.get("routeKey") == PROXY_ROUTE_KEY:
        return proxy_apicbase(event)
    return app.resolve(event, context)


def _whole_path(event: dict) -> bool:
    """Powertools matches routes with ``re.match(...$)``, which lets '/connections/x\n' reach
    connection 'x': a path with whitespace or a control character is no route at all."""
    path = str(event.get("rawPath") or "")
    return not any(c.isspace() or not c.isprintable() for c in path)
