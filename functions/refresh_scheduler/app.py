"""EventBridge schedule: queue the connections whose access token expires within the window."""

from dataclasses import asdict

from apicbase_oauth import deps
from apicbase_oauth.config import Settings
from apicbase_oauth.observability import LambdaContext, logger, metrics
from apicbase_oauth.schedule import queue_due_refreshes

DEPS = deps.build(Settings.from_env())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return asdict(queue_due_refreshes(DEPS))
