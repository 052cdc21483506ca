"""Admin API (AWS_IAM): connect sessions, connections, tokens.

Each route parses its HTTP input into typed arguments (``validation``, ``edge``), calls one use
case, and renders the model it returns; errors become answers in one exception handler.
"""

import json
import math
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import admin, connect, deps, edge, proxy, tokens, validation
from apicbase_oauth.config import Settings
from apicbase_oauth.errors import BrokerError, InvalidRequest, OverBudget, RateLimited
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())
PROXY = proxy.build(DEPS)
app = APIGatewayHttpResolver()
PROXY_ROUTE_KEY = "ANY /connections/{connection_id}/apicbase/{proxy+}"
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
    return edge.body_fields(body, required=required, optional=optional)


def _query(name: str) -> str | None:
    return (app.current_event.query_string_parameters or {}).get(name)


def _path_id(raw: str) -> str:
    # API Gateway hands Powertools the raw path: a client that percent-encodes ':' means ':'.
    try:
        return validation.connection_id(unquote(raw, errors="strict"))
    except UnicodeDecodeError:
        raise InvalidRequest("connection_id is not valid UTF-8", code="invalid_connection_id") from None


@app.post("/connect-sessions")
def create_connect_session() -> Response:
    fields = _body(required={"connection_id"}, optional={"scopes", "return_url", "application", "expected_username"})
    started = connect.start_connect_session(
        DEPS,
        validation.connection_id(fields["connection_id"]),
        scopes=validation.scopes(fields.get("scopes")),
        return_url=validation.return_url(fields.get("return_url")),
        application=validation.application(fields.get("application")),
        request_domain=app.current_event.request_context.domain_name,
        expected_username=validation.expected_username(fields.get("expected_username")),
    )
    return _json(201, edge.session_view(started))


@app.get("/connections")
def list_connections() -> Response:
    raw_limit = _query("limit")  # absent: 50; present, even empty: checked
    limit = 50 if raw_limit is None else validation.whole_number(raw_limit, name="limit", low=1, high=100)
    cursor = _query("cursor")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_LENGTH:
        raise InvalidRequest("cursor is not one this API handed out", code="invalid_cursor")
    return _json(200, edge.page_view(admin.list_connections(DEPS, limit=limit, cursor=cursor)))


@app.get("/connections/<connection_id>")
def describe_connection(connection_id: str) -> Response:
    introspect = edge.flag(_query("introspect"), "introspect")
    connection = admin.describe_connection(DEPS, _path_id(connection_id))
    view = edge.connection_view(connection)
    if introspect:
        view["introspection"] = edge.introspection_view(admin.introspect_connection(DEPS, connection))
    return _json(200, view)


@app.delete("/connections/<connection_id>")
def delete_connection(connection_id: str) -> Response:
    return _json(200, edge.disconnection_view(admin.disconnect(DEPS, _path_id(connection_id))))


@app.get("/connections/<connection_id>/token")
def get_token(connection_id: str) -> Response:
    return _json(200, edge.token_view(tokens.get_token(DEPS, _path_id(connection_id)), DEPS.now()))


@app.post("/connections/<connection_id>/token")
def replace_rejected_token(connection_id: str) -> Response:
    """A token Apicbase answered 401 to: a newer one, refreshing only if the broker still holds it."""
    connection_id = _path_id(connection_id)
    rejected = validation.token(_body(required={"rejected_token"}, optional=set())["rejected_token"], "rejected_token")
    return _json(200, edge.token_view(tokens.replace_rejected_token(DEPS, connection_id, rejected), DEPS.now()))


@app.post("/connections/<connection_id>/refresh")
def refresh(connection_id: str) -> Response:
    return _json(200, edge.refresh_view(admin.force_refresh(DEPS, _path_id(connection_id))))


@app.post("/connections/<connection_id>/authorization-code")
def exchange_code(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    fields = _body(required={"code"}, optional={"application", "redirect_uri"})
    connection = connect.exchange_pasted_code(
        DEPS,
        connection_id,
        code=validation.authorization_code(fields["code"]),
        application=validation.application(fields.get("application")),
        redirect_uri=validation.return_url(fields.get("redirect_uri")),
    )
    return _json(201, edge.connection_view(connection))


@app.put("/connections/<connection_id>/tokens")
def import_tokens(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    fields = _body(required={"access_token", "refresh_token"}, optional={"expires_in", "application"})
    connection = connect.import_tokens(
        DEPS,
        connection_id,
        access_token=validation.token(fields["access_token"], "access_token"),
        refresh_token=validation.token(fields["refresh_token"], "refresh_token"),
        expires_in=validation.expires_in(fields.get("expires_in")),
        application=validation.application(fields.get("application")),
    )
    return _json(200, edge.connection_view(connection))


def proxy_apicbase(event: dict) -> dict:
    """ANY /connections/{id}/apicbase/{proxy+}, outside the resolver: its path spans segments and
    its answers are Apicbase's (bytes, headers), not this API's JSON."""
    try:
        raw_id, method, url, headers, body = proxy.request_from_event(event, DEPS.settings.api_url)
        request = proxy.ProxyRequest(_path_id(raw_id), method, url, headers, body)
        return proxy.lambda_answer(PROXY.forward(request), head=method == "HEAD")
    except BrokerError as exc:
        answer = broker_error(exc)
    except Exception as exc:
        answer = unexpected_error(exc)
    headers = {**answer.headers, "Content-Type": answer.content_type}
    return {"statusCode": answer.status_code, "headers": headers, "body": answer.body, "isBase64Encoded": False}


@app.exception_handler(BrokerError)
def broker_error(exc: BrokerError) -> Response:
    status = edge.status_of(exc)
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
