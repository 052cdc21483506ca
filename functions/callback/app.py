"""Public OAuth redirect URI: GET /oauth/callback?code&state (or ?error&state)."""

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import deps, pages, usecases
from apicbase_oauth.config import Settings
from apicbase_oauth.errors import BrokerError
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())
app = APIGatewayHttpResolver()


def _page(answer: tuple[int, dict[str, str], str]) -> Response:
    status, headers, body = answer
    return Response(status_code=status, headers=headers, body=body)


@app.get("/oauth/callback")
def callback() -> Response:
    result = usecases.complete_callback(DEPS, app.current_event.query_string_parameters or {})
    connection = result.connection
    return _page(pages.connected(connection.connection_id, connection.username, result.return_url))


@app.exception_handler(BrokerError)
def broker_error(exc: BrokerError) -> Response:
    logger.info("callback failed", error=exc.code, status=exc.status, connection_id=exc.connection_id)
    metrics.add_metric(name=f"Callback{exc.status // 100}xx", unit="Count", value=1)
    return _page(pages.failure(exc))


@app.exception_handler(Exception)
def unexpected_error(exc: Exception) -> Response:
    # The exception's text could in theory carry request data: log its type, not its message.
    logger.error("callback crashed", error_type=type(exc).__name__)
    metrics.add_metric(name="Callback5xx", unit="Count", value=1)
    return _page(pages.unexpected())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
