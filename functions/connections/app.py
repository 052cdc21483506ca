"""Admin API (AWS_IAM): connect sessions, connections, tokens."""

import json
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import deps, usecases
from apicbase_oauth.config import Settings
from apicbase_oauth.errors import BrokerError, InvalidRequest
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())
app = APIGatewayHttpResolver()
MAX_BODY_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(payload),
        headers={**NO_STORE, **(headers or {})},
    )


def _body() -> Any:
    try:
        raw = app.current_event.decoded_body or ""
    except ValueError:  # base64 that is invalid, or decodes to bytes that are not UTF-8
        raise InvalidRequest("the request body is not valid base64 of UTF-8 text", code="invalid_body") from None
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise InvalidRequest("the request body is larger than 16 KiB", code="body_too_large")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None


def _path_id(raw: str) -> str:
    # API Gateway hands Powertools the raw path: a client that percent-encodes ':' means ':'.
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("connection_id is not valid UTF-8", code="invalid_connection_id") from None


@app.post("/connect-sessions")
def create_connect_session() -> Response:
    domain = app.current_event.request_context.domain_name
    return _json(201, usecases.start_connect_session(DEPS, _body(), request_domain=domain))


@app.get("/connections")
def list_connections() -> Response:
    return _json(200, usecases.list_connections(DEPS, app.current_event.query_string_parameters or {}))


@app.get("/connections/<connection_id>")
def describe_connection(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    flag = (app.current_event.query_string_parameters or {}).get("introspect")
    introspect = usecases.parse_introspect_flag(flag)
    return _json(200, usecases.describe_connection(DEPS, connection_id, introspect=introspect))


@app.delete("/connections/<connection_id>")
def delete_connection(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    usecases.disconnect(DEPS, connection_id)
    return Response(status_code=204, headers=NO_STORE, body="")


@app.get("/connections/<connection_id>/token")
def get_token(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    return _json(200, usecases.get_token(DEPS, connection_id))


@app.post("/connections/<connection_id>/refresh")
def refresh(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    return _json(200, usecases.force_refresh(DEPS, connection_id))


@app.post("/connections/<connection_id>/authorization-code")
def exchange_code(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    return _json(201, usecases.exchange_pasted_code(DEPS, connection_id, _body()))


@app.put("/connections/<connection_id>/tokens")
def import_tokens(connection_id: str) -> Response:
    connection_id = _path_id(connection_id)
    return _json(200, usecases.import_tokens(DEPS, connection_id, _body()))


@app.exception_handler(BrokerError)
def broker_error(exc: BrokerError) -> Response:
    logger.info("admin request failed", error=exc.code, status=exc.status)
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return _json(exc.status, {"error": {"code": exc.code, "message": exc.message}}, headers)


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
    caller = (((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}).get("userArn")
    logger.append_keys(caller=caller)
    return app.resolve(event, context)
