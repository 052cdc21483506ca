"""One Logger and one Metrics per container, shared by the handlers and the layer.

Powertools keeps Metrics state per namespace, so the handlers' ``@metrics.log_metrics`` flushes
what the use cases add here.
"""

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="apicbase-oauth-broker")
metrics = Metrics(service="apicbase-oauth-broker")
