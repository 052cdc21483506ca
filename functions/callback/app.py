"""Public OAuth routes: GET /oauth/start?session (connect_url: binds the browser, then to Apicbase)
and the redirect URI, GET /oauth/callback?code&state (or ?error&state).

A plain handler, no event resolver: this function serves two routes, and a person waits for its
cold start with a 60-second authorization code in hand (the resolver's import cost more than
its routing saves here; docs/BENCHMARKS.md).
"""

from apicbase_oauth import deps
from apicbase_oauth.config import Settings
from apicbase_oauth.connect import begin_sign_in, complete_callback
from apicbase_oauth.edge import answers, checks, gateway, pages, routes
from apicbase_oauth.errors import BrokerError
from apicbase_oauth.observability import API_GATEWAY_HTTP, LambdaContext, logger, metrics
from apicbase_oauth.signin import binder_tag

DEPS = deps.build(Settings.from_env())
BRAND = DEPS.settings.brand
Page = tuple[int, dict[str, str], str, list[str]]


def start(event: dict) -> Page:
    """connect_url: consume the one-time start id, set the binder cookie, redirect to Apicbase."""
    try:
        sign_in = begin_sign_in(DEPS, start_id=checks.issued(gateway.query_of(event).get("session")))
    except BrokerError as exc:
        return (*failed(exc), [])
    status, headers, body = pages.redirect(sign_in.authorize_url)
    return status, headers, body, [pages.binder_cookie(sign_in.binder, sign_in.max_age, sign_in.tag)]


def callback(event: dict) -> Page:
    query = gateway.query_of(event)
    state = checks.issued(query.get("state"))
    # This sign-in's binder cookie (each sign-in under way in the browser has its own).
    tag = binder_tag(state) if state else ""
    binder = gateway.cookie(event, pages.binder_cookie_name(tag)) or gateway.cookie(event, pages.BINDER_COOKIE)
    try:
        outcome = complete_callback(
            DEPS,
            state=state,
            code=checks.code_or_none(query.get("code")),
            error=checks.redirect_error(query.get("error")),
            binder=checks.issued(binder),
        )
    except BrokerError as exc:
        return cleared(failed(exc), tag)
    if outcome.error is not None:
        page = failed(outcome.error, return_url=outcome.return_url, connection_id=outcome.connection_id)
        return cleared(page, tag)
    assert outcome.connection is not None
    connection = outcome.connection
    page = pages.connected(
        outcome.connection_id,
        username=connection.username,
        library=connection.library,
        return_url=outcome.return_url,
        brand=BRAND,
    )
    return cleared(page, tag)


def cleared(page: tuple[int, dict[str, str], str], tag: str) -> Page:
    """The callback's answer, whatever it is, ends its binder cookie's use (another sign-in's
    cookie stays, for that sign-in's callback)."""
    return (*page, [pages.clear_binder_cookie(tag), pages.clear_binder_cookie()])


def failed(
    exc: BrokerError, *, return_url: str | None = None, connection_id: str | None = None
) -> tuple[int, dict[str, str], str]:
    status = answers.status_of(exc)
    logger.info("callback failed", error=exc.code, status=status, connection_id=connection_id)
    metrics.add_metric(name=f"Callback{status // 100}xx", unit="Count", value=1)
    return pages.failure(exc.code, status, return_url=return_url, connection_id=connection_id, brand=BRAND)


ROUTES = {r.route_key: f for r, f in routes.bind(routes.CALLBACK, {"start": start, "callback": callback}).items()}


@logger.inject_lambda_context(correlation_id_path=API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    DEPS.bind(context)
    route = ROUTES.get(gateway.route_key(event))
    try:
        status, headers, body, cookies = route(event) if route else (*pages.not_found(BRAND), [])
    except Exception as exc:
        # The exception's text could in theory carry request data: log its type, not its message.
        logger.error("callback crashed", error_type=type(exc).__name__)
        metrics.add_metric(name="Callback5xx", unit="Count", value=1)
        status, headers, body, cookies = (*pages.unexpected(BRAND), [])
    answer = {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}
    if cookies and "httpMethod" in event:  # payload 1.0
        answer["multiValueHeaders"] = {"Set-Cookie": cookies}
    elif cookies:
        answer["cookies"] = cookies  # payload 2.0: API Gateway sends one Set-Cookie each
    return answer
