"""Public OAuth redirect URI: GET /oauth/callback?code&state (or ?error&state).

A plain handler, no event resolver: this function serves one route, and a person waits for its
cold start with a 60-second authorization code in hand (the resolver's import cost more than
its routing saves here; docs/BENCHMARKS.md).
"""

from collections.abc import Mapping

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import deps, edge, pages
from apicbase_oauth.config import Settings
from apicbase_oauth.connect import complete_callback
from apicbase_oauth.errors import BrokerError
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())
Page = tuple[int, dict[str, str], str]


def callback(query: Mapping[str, str]) -> Page:
    try:
        outcome = complete_callback(DEPS, state=query.get("state"), code=query.get("code"), error=query.get("error"))
    except BrokerError as exc:
        return failed(exc)
    if outcome.error is not None:
        return failed(outcome.error, return_url=outcome.return_url, connection_id=outcome.connection_id)
    assert outcome.connection is not None
    return pages.connected(outcome.connection_id, outcome.connection.username, outcome.return_url)


def failed(exc: BrokerError, *, return_url: str | None = None, connection_id: str | None = None) -> Page:
    status = edge.status_of(exc)
    logger.info("callback failed", error=exc.code, status=status, connection_id=connection_id)
    metrics.add_metric(name=f"Callback{status // 100}xx", unit="Count", value=1)
    return pages.failure(exc.code, status, return_url=return_url, connection_id=connection_id)


ROUTES = {"GET /oauth/callback": callback}


def query_of(event: dict) -> dict[str, str]:
    """The query string as payload 2.0 gives it: a repeated key's values joined with commas (so a
    repeated state is no state), also from payload 1.0's multi-value form."""
    multi = event.get("multiValueQueryStringParameters")
    if multi:
        return {key: ",".join(values) for key, values in multi.items()}
    return event.get("queryStringParameters") or {}


def route_key(event: dict) -> str:
    """API Gateway's route key; behind a catch-all ($default) route, the method and path. The
    optional REST stage of the flood rule sends payload 1.0: its method and resource."""
    if "httpMethod" in event:
        return f"{event['httpMethod']} {event.get('resource')}"
    key = str(event.get("routeKey") or "$default")
    if key != "$default":
        return key
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
    return f"{method} {event.get('rawPath')}"


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    DEPS.bind(context)
    route = ROUTES.get(route_key(event))
    try:
        status, headers, body = route(query_of(event)) if route else pages.not_found()
    except Exception as exc:
        # The exception's text could in theory carry request data: log its type, not its message.
        logger.error("callback crashed", error_type=type(exc).__name__)
        metrics.add_metric(name="Callback5xx", unit="Count", value=1)
        status, headers, body = pages.unexpected()
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}
