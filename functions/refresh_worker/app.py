"""SQS worker: refresh each queued connection; failed records are retried by SQS, then dead-lettered.

The partial batch response (ReportBatchItemFailures) is a loop of our own, not Powertools' batch
utility, whose import (asyncio, every event data class) cost this function's cold start more than
anything else it imports (docs/BENCHMARKS.md).
"""

from apicbase_oauth import deps
from apicbase_oauth.config import Settings
from apicbase_oauth.observability import LambdaContext, logger, metrics
from apicbase_oauth.schedule import refresh_from_message

DEPS = deps.build(Settings.from_env())


def record_handler(record: dict) -> str:
    outcome = refresh_from_message(DEPS, record["body"])
    logger.info("refresh message handled", message_id=record["messageId"], outcome=outcome)
    return outcome


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # Each record checks the time left before it takes a lease: those without enough are
    # handed back as batch item failures, untouched. A batch that fails whole is reported
    # record by record too, not raised: SQS retries each.
    DEPS.bind(context)
    failures = []
    for record in event["Records"]:
        try:
            record_handler(record)
        except Exception as exc:
            # Its text could carry the message's data: its type only.
            logger.warning("refresh message failed", message_id=record["messageId"], error_type=type(exc).__name__)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
