"""Adapters: one module per outside system, each raising the layer's own errors (``errors``).

``apicbase`` (OAuth endpoints), ``connections``/``sessions``/``budget`` (DynamoDB, with ``dynamodb``
their shared plumbing), ``crypto`` (KMS), ``credentials`` (Secrets Manager), ``events``
(EventBridge), ``queue`` (SQS). Adapters never call use cases or each other across systems.
"""
