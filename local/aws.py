"""Creates the stack's AWS resources on an emulated AWS (moto) from template.yaml's properties,
and computes each function's environment as CloudFormation would set it."""

from __future__ import annotations

import json
from typing import Any

from . import template as tpl
from .lambda_context import ACCOUNT, REGION


def provision(
    session: Any,
    template: dict[str, Any],
    *,
    stack_name: str = "apicbase-oauth-broker",
    applications: dict[str, dict[str, str]] | None = None,
    parameters: dict[str, str] | None = None,
) -> dict[str, str]:
    """Create table, key, secret and queues; return the values !Ref and !GetAtt resolve to."""
    params = {**tpl.parameter_defaults(template), **(parameters or {})}
    refs: dict[str, str] = {
        **params,
        "AWS::StackName": stack_name,
        "AWS::Region": session.region_name or REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "Condition:HasCallbackUrlOverride": "true" if params.get("CallbackUrlOverride") else "false",
    }

    kms = session.client("kms")
    key_props = tpl.resource(template, "TokenKey")["Properties"]
    key = kms.create_key(Description=key_props["Description"])["KeyMetadata"]
    if key_props.get("EnableKeyRotation"):  # what `apicbase-broker doctor` checks
        kms.enable_key_rotation(KeyId=key["KeyId"])
    refs["TokenKey"] = key["KeyId"]
    refs["TokenKey.Arn"] = key["Arn"]

    dynamodb = session.client("dynamodb")
    table_name = f"{stack_name}-ConnectionsTable"
    dynamodb.create_table(**tpl.dynamodb_create_table_kwargs(template, "ConnectionsTable", table_name))
    ttl = tpl.ttl_attribute(template, "ConnectionsTable")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
        )
    recovery = tpl.resource(template, "ConnectionsTable")["Properties"].get("PointInTimeRecoverySpecification", {})
    if recovery.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=table_name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    refs["ConnectionsTable"] = table_name
    refs["ConnectionsTable.Arn"] = f"arn:aws:dynamodb:{refs['AWS::Region']}:{ACCOUNT}:table/{table_name}"
    stream_arn = dynamodb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    if stream_arn:
        refs["ConnectionsTable.StreamArn"] = stream_arn

    secrets = session.client("secretsmanager")
    secret_props = tpl.resource(template, "ClientCredentialsSecret")["Properties"]
    secret_value = json.dumps(applications) if applications is not None else secret_props["SecretString"]
    secret = secrets.create_secret(Name=f"{stack_name}-client-credentials", SecretString=secret_value)
    refs["ClientCredentialsSecret"] = secret["ARN"]

    sqs = session.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{stack_name}-RefreshDeadLetterQueue")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_props = tpl.resource(template, "RefreshQueue")["Properties"]
    redrive = queue_props["RedrivePolicy"]
    queue_url = sqs.create_queue(
        QueueName=f"{stack_name}-RefreshQueue",
        Attributes={
            "VisibilityTimeout": str(queue_props["VisibilityTimeout"]),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(redrive["maxReceiveCount"])}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    refs["RefreshQueue"] = queue_url
    refs["RefreshDeadLetterQueue"] = dlq_url
    refs["RefreshQueue.Arn"] = queue_arn
    refs["RefreshDeadLetterQueue.Arn"] = dlq_arn
    # The events function's dead-letter queue, and the webhook's when the webhook is on.
    refs["Condition:HasWebhook"] = "true" if params.get("WebhookUrl") and params.get("WebhookApiKey") else "false"
    for logical_id in ("ConnectionEventsDeadLetterQueue", "WebhookDeadLetterQueue"):
        condition = template["Resources"].get(logical_id, {}).get("Condition")
        if logical_id in template["Resources"] and refs.get(f"Condition:{condition}", "true") == "true":
            url = sqs.create_queue(QueueName=f"{stack_name}-{logical_id}")["QueueUrl"]
            refs[logical_id] = url
            refs[f"{logical_id}.Arn"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            refs[f"{logical_id}.QueueName"] = f"{stack_name}-{logical_id}"
    return refs


def queue_url(arn_of: Any, refs: dict[str, str]) -> str:
    """The URL (what SQS's API takes) of the queue a template's ``!GetAtt Queue.Arn`` names."""
    logical_id, attribute = arn_of["Fn::GetAtt"]
    assert attribute == "Arn", arn_of
    return refs[logical_id]


def function_environment(template: dict[str, Any], logical_id: str, refs: dict[str, str]) -> dict[str, str]:
    """The environment the template gives one function, resolved against ``refs``."""
    fn = tpl.functions(template)[logical_id]
    return {k: str(tpl.resolve(v, refs)) for k, v in fn.environment.items()}
