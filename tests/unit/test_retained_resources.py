"""What cannot be recreated outlives its stack: the table, the token key and the client-credentials
secret are retained on deletion and replacement, and a new stack adopts them through parameters,
read from template.yaml (tests/deploy/test_rehearsal.py deletes and redeploys a stack)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from local import aws as local_aws
from local import template as tpl

# Each kept resource, the parameter that adopts an existing one, and the condition that says so.
KEPT = {
    "ConnectionsTable": ("ExistingTableName", "AdoptsTable"),
    "TokenKey": ("ExistingKeyArn", "AdoptsKey"),
    "ClientCredentialsSecret": ("ExistingSecretArn", "AdoptsSecret"),
}
KEPT_OUTPUTS = ("TableName", "TokenKeyArn", "SecretArn")
SUB_NAME = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z]+)?\}")


def references(node: Any, branches: tuple[tuple[str, int], ...] = ()) -> Iterator[tuple[str, tuple]]:
    """(logical id, the Fn::If branches around it) for every Ref, GetAtt and ${...} in ``node``."""
    if isinstance(node, dict):
        if "Fn::If" in node and len(node) == 1:
            condition, *choices = node["Fn::If"]
            for index, choice in enumerate(choices):
                yield from references(choice, (*branches, (condition, index)))
            return
        for key, value in node.items():
            if key == "Ref":
                yield value, branches
            elif key == "Fn::GetAtt":
                yield value[0], branches
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                yield from ((name, branches) for name in SUB_NAME.findall(text))
                if not isinstance(value, str):
                    yield from references(value[1], branches)
            else:
                yield from references(value, branches)
    elif isinstance(node, list):
        for item in node:
            yield from references(item, branches)


@pytest.mark.parametrize("logical_id", sorted(KEPT))
def test_a_kept_resource_is_retained_on_deletion_and_replacement(template, logical_id):
    # Given the resource, Then deleting or replacing the stack leaves it in the account
    resource = tpl.resource(template, logical_id)
    assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == ("Retain", "Retain")


@pytest.mark.parametrize("logical_id", sorted(KEPT))
def test_a_kept_resource_is_created_only_when_none_is_adopted(template, logical_id):
    # Given its adoption parameter (empty by default) and its condition
    parameter, adopts = KEPT[logical_id]
    assert template["Parameters"][parameter]["Default"] == ""
    assert template["Conditions"][adopts] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    # Then the resource exists only under the opposite condition
    creates = tpl.resource(template, logical_id)["Condition"]
    assert template["Conditions"][creates] == {"Fn::Equals": [{"Ref": parameter}, ""]}


def test_every_reference_to_a_kept_resource_goes_through_its_adoption(template):
    # Given every Ref, GetAtt and ${...} in the template (resources, Globals, outputs)
    unguarded = [
        (name, where)
        for where in ("Globals", "Resources", "Outputs")
        for name, branches in references(template[where])
        if name in KEPT and (KEPT[name][1], 1) not in branches
    ]
    # Then each one sits in the "not adopted" branch of its resource's Adopts* condition
    assert unguarded == []


def adopted_table_needs(template) -> list[Any]:
    """What the template's rules assert whenever a table is adopted."""
    return [
        assertion["Assert"]
        for rule in template["Rules"].values()
        if rule["RuleCondition"] == template["Conditions"]["AdoptsTable"]
        for assertion in rule["Assertions"]
    ]


def test_adopting_the_table_without_its_key_is_refused(template):
    # Given the template's rules, Then an adopted table needs its key (its pairs open with it only)
    assert template["Conditions"]["AdoptsKey"] in adopted_table_needs(template)


def test_adopting_the_table_without_its_stream_is_refused(template):
    # Given the template's rules, Then an adopted table needs its stream (the connection events read it)
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExistingTableStreamArn"}, ""]}]} in adopted_table_needs(template)


def test_an_adopting_stack_s_functions_and_outputs_name_the_adopted_resources(template):
    # Given the adoption parameters set (as CloudFormation evaluates the conditions)
    refs = {
        "ExistingTableName": "apicbase-oauth-broker-ConnectionsTable-OLD",
        "ExistingKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/0f6c4b0e-0000-4000-8000-000000000001",
        "ExistingSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:old-AbCdEf",
        "Condition:AdoptsTable": "true",
        "Condition:AdoptsKey": "true",
        "Condition:AdoptsSecret": "true",
        "AWS::Partition": "aws",
        "AWS::Region": "eu-west-1",
        "AWS::AccountId": "123456789012",
    }
    # When the functions' environment and the outputs are resolved
    names = {**tpl.parameter_defaults(template), "RefreshQueue": "queue", "AWS::StackName": "s", **refs}
    env = local_aws.function_environment(template, "ConnectionsFunction", names)
    outputs = {k: tpl.resolve(template["Outputs"][k]["Value"], names) for k in KEPT_OUTPUTS}
    # Then every one of them is the adopted resource
    assert (env["TABLE_NAME"], env["TOKEN_KEY_ID"], env["CLIENT_SECRET_ID"]) == (
        refs["ExistingTableName"],
        refs["ExistingKeyArn"],
        refs["ExistingSecretArn"],
    )
    assert outputs == {
        "TableName": refs["ExistingTableName"],
        "TokenKeyArn": refs["ExistingKeyArn"],
        "SecretArn": refs["ExistingSecretArn"],
    }
