"""SQS worker: refresh each queued connection; failed records are retried by SQS, then dead-lettered."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from apicbase_oauth import deps
from apicbase_oauth.config import Settings
from apicbase_oauth.observability import logger, metrics
from apicbase_oauth.refresh import refresh_from_message

DEPS = deps.build(Settings.from_env())
# A batch that fails whole is reported record by record too, not raised: SQS retries each.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> str:
    outcome = refresh_from_message(DEPS, record.body)
    logger.info("refresh message handled", message_id=record.message_id, outcome=outcome)
    return outcome


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event,
        record_handler=record_handler,
        processor=processor,
        context=context,
    )
