"""The connections table's stream into the broker's EventBridge events, at least once: a record
whose events were not all put is a batch item failure (Lambda delivers it again, then gives the
batch to the dead-letter queue); ``{"replay": "dead-letter-queue"}`` announces those batches."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import deps
from apicbase_oauth.announce import handle
from apicbase_oauth.config import Settings
from apicbase_oauth.observability import logger, metrics

DEPS = deps.build(Settings.from_env())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    DEPS.bind(context)
    return handle(DEPS, event)
