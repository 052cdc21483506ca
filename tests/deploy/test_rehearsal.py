"""Deploy rehearsal: the stack as ``sam deploy`` would create it on a new account, in moto.

``sam build`` (reused when ``make build`` already built the current sources), the artifacts
uploaded to S3 as ``sam package`` does, the template translated by SAM's own translator, then
created with the defaults in moto's CloudFormation: its Outputs resolve, no function reserves
concurrency, and ``apicbase-broker --stack-name`` finds the API from the Outputs.

moto's CloudFormation has no model for some types. Two are referenced by the Outputs and the
functions, so they are substituted: created through moto's own service API and passed to the stack
as parameters of the same logical id (``!Ref`` and ``${...}`` then resolve to the real ids):
  AWS::ApiGatewayV2::Api        created empty, then the translated OpenAPI body imported into it
                                once the functions exist (its routes are checked against the template)
  AWS::SecretsManager::Secret   created with the template's properties
The others moto skips (it marks them created and creates nothing); nothing refers to them:
  AWS::ApiGatewayV2::Stage, AWS::CloudWatch::Alarm, AWS::Scheduler::Schedule
A substituted resource whose Condition is false (ExistingSecretArn set) is not created, as
CloudFormation would not create it. moto also creates some types partly: a function's Layers,
Architectures and LoggingConfig are dropped (the layer itself is published), a table's
point-in-time recovery and TTL are not set, and a key's policy is kept in a form its DescribeKey
cannot read (mended after each create, so ``doctor`` can read the key). moto keeps a resource
whose DeletionPolicy is Retain when the stack is deleted, as CloudFormation does.

The lifecycle test runs the functions' code in this process (moto would need Docker to invoke
it): each handler is imported with the environment moto's Lambda holds for the function
CloudFormation created, and requests to the stack's HTTP API host reach it as API Gateway's
payload 2.0 events. What is rehearsed of IAM: each function's role as CloudFormation created it
from SAM's translation is the role the local run enforces (local/iam.py), statement for statement,
with the deployed resources' names. Not rehearsed: the custom domain (AWS::ApiGatewayV2::DomainName,
ApiMapping; off by default), the webhook (moto has no AWS::Events::ApiDestination; off by
default: cfn-lint and checkov check it, make lint), and a stack update that removes a retained
resource (moto deletes it; CloudFormation keeps it).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import io
import json
import re
import subprocess
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
import responses
from local import iam
from local import template as tpl
from moto import mock_aws
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from apicbase_broker import BrokerClient
from apicbase_broker_cli.main import main
from tests import fakes
from tests.conftest import REGION
from tests.deploy.served import ServedStack

# moto says so for each skipped type on every read of the stack; the create step records it once.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse .* not supported:UserWarning")
ROOT = Path(__file__).resolve().parents[2]
STACK = "apicbase-oauth-broker"
BUCKET = "rehearsal-artifacts"
SKIPPED_BY_MOTO = {"AWS::ApiGatewayV2::Stage", "AWS::CloudWatch::Alarm", "AWS::Scheduler::Schedule"}
FUNCTIONS = {
    "CallbackFunction": "CallbackReservedConcurrency",
    "ConnectionsFunction": "AdminReservedConcurrency",
    "RefreshSchedulerFunction": "SchedulerReservedConcurrency",
    "RefreshWorkerFunction": "WorkerReservedConcurrency",
    "ConnectionEventsFunction": "EventsReservedConcurrency",
}
UNSUPPORTED = re.compile(r"Tried to parse (\S+) but it's not supported")
EXPECTED_OUTPUTS = {
    "ApiUrl",
    "CallbackUrl",
    "TableName",
    "SecretArn",
    "RefreshQueueUrl",
    "EventSource",
    "TokenKeyArn",
    "ConnectionEventsFunctionName",
    "ConnectionEventsDeadLetterQueueUrl",
}


class NoManagedPolicies:
    """The template names no AWS managed policy, so the translator must never need IAM's list."""

    def load(self) -> dict[str, str]:
        raise AssertionError("the template names a managed policy; the rehearsal would need IAM")


@pytest.fixture(scope="module")
def rehearsal(sam_build: Path) -> dict[str, Any]:
    """The built template translated to CloudFormation, and its artifacts zipped for S3 (once per run)."""
    started = time.monotonic()
    template = yaml_parse((sam_build / "template.yaml").read_text())
    artifacts: dict[str, bytes] = {}
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):  # a built directory, as sam package finds it
                artifacts[logical_id] = _zip(sam_build / properties[key])
                properties[key] = f"s3://{BUCKET}/{logical_id}.zip"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", REGION)  # the translator's pseudo parameters
        translated = transform(template, {}, NoManagedPolicies())
    return {"template": translated, "artifacts": artifacts, "prepared_seconds": time.monotonic() - started}


def _zip(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # stored: moto only keeps it
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    return buffer.getvalue()


# --- substitutes for the types moto's CloudFormation cannot create -------------------------------
def _http_api(session: Any, logical_id: str, properties: dict[str, Any]) -> str:
    return str(session.client("apigatewayv2").create_api(Name=f"{STACK}-{logical_id}", ProtocolType="HTTP")["ApiId"])


def _secret(session: Any, logical_id: str, properties: dict[str, Any]) -> str:
    client = session.client("secretsmanager")
    return str(client.create_secret(Name=f"{STACK}-{logical_id}", **properties)["ARN"])


SUBSTITUTES: dict[str, Callable[[Any, str, dict[str, Any]], str]] = {
    "AWS::ApiGatewayV2::Api": _http_api,
    "AWS::SecretsManager::Secret": _secret,
}


def _holds(template: dict[str, Any], condition: Any, parameters: dict[str, str]) -> bool:
    """A condition of the template (a name or an expression) with these parameter values."""
    if isinstance(condition, str):
        return _holds(template, template["Conditions"][condition], parameters)
    ((function, argument),) = condition.items()
    if function == "Condition":
        return _holds(template, argument, parameters)
    if function == "Fn::Not":
        return not _holds(template, argument[0], parameters)
    if function == "Fn::And":
        return all(_holds(template, c, parameters) for c in argument)
    if function == "Fn::Or":
        return any(_holds(template, c, parameters) for c in argument)
    assert function == "Fn::Equals", function

    def value(v: Any) -> Any:
        if isinstance(v, dict) and "Ref" in v:
            return parameters.get(v["Ref"], str(template["Parameters"][v["Ref"]].get("Default", "")))
        return v

    return bool(value(argument[0]) == value(argument[1]))


def _substitute(
    session: Any, template: dict[str, Any], parameters: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The template without the substituted resources, and their physical ids by logical id."""
    template = copy.deepcopy(template)
    substituted: dict[str, str] = {}
    for logical_id, resource in list(template["Resources"].items()):
        if resource["Type"] in SUBSTITUTES:
            if "Condition" in resource and not _holds(template, resource["Condition"], parameters):
                continue  # not created; moto skips it too, and only the other !If branch is read
            substituted[logical_id] = SUBSTITUTES[resource["Type"]](session, logical_id, resource["Properties"])
            del template["Resources"][logical_id]
            template["Parameters"][logical_id] = {"Type": "String"}
    text = json.dumps(template)
    for logical_id in substituted:
        # A parameter stands in for Ref and ${...} only; an attribute would need the real type.
        assert f'"Fn::GetAtt": ["{logical_id}"' not in text and f"${{{logical_id}." not in text
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            # moto drops a function's Layers when it creates it, and fails on them when it updates it.
            resource["Properties"].pop("Layers", None)
        if isinstance(resource.get("DependsOn"), list):
            resource["DependsOn"] = [d for d in resource["DependsOn"] if d not in substituted]
    return template, substituted


@pytest.fixture
def account(rehearsal) -> Iterator[Any]:
    """A moto account with the artifacts uploaded, as ``sam deploy`` leaves them in its bucket."""
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for logical_id, body in rehearsal["artifacts"].items():
            s3.put_object(Bucket=BUCKET, Key=f"{logical_id}.zip", Body=body)
        yield session


def _described(session: Any, **more: Any) -> dict[str, Any]:
    cloudformation = session.client("cloudformation")
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    resources = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    _mend_key_policies(session)
    _detach_stream_invocations(session)
    return {
        "session": session,
        "stack": stack,
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "physical": {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources},
        **more,
    }


def _mend_key_policies(session: Any) -> None:
    """moto keeps a key policy from CloudFormation as a dict, on which its DescribeKey fails."""
    from moto.kms.models import kms_backends  # noqa: PLC0415 (moto's internals, for this one quirk)

    account_id = session.client("sts").get_caller_identity()["Account"]
    for key in kms_backends[account_id][REGION].keys.values():
        if isinstance(key.policy, dict):
            key.policy = json.dumps(key.policy)


def _detach_stream_invocations(session: Any) -> None:
    """moto invokes a table stream's event source mapping on every write, which needs Docker and
    fails the write; the functions run in this process here, the mapping stays listed."""
    from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415 (moto's internals, for this one quirk)

    account_id = session.client("sts").get_caller_identity()["Account"]
    for table in dynamodb_backends[account_id][REGION].tables.values():
        table.lambda_event_source_mappings.clear()


@pytest.fixture
def deploy(account, rehearsal) -> Callable[..., dict[str, Any]]:
    """Creates the stack in moto with the given parameters; returns what the test inspects."""

    def create(**parameters: str) -> dict[str, Any]:
        template, substituted = _substitute(account, rehearsal["template"], parameters)
        values = {**substituted, **parameters}
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            account.client("cloudformation").create_stack(
                StackName=STACK,
                TemplateBody=json.dumps(template),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        return _described(
            account,
            substituted=substituted,
            parameters=values,
            template=template,
            create_seconds=time.monotonic() - started,
            # moto's own word for each type it skipped
            skipped={m[1] for w in warned if (m := UNSUPPORTED.search(str(w.message)))},
        )

    return create


def _update(created: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The stack updated with the same template and some parameters changed."""
    values = {**created["parameters"], **parameters}
    created["session"].client("cloudformation").update_stack(
        StackName=STACK,
        TemplateBody=json.dumps(created["template"]),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    return {**created, **_described(created["session"]), "parameters": values}


def test_a_new_account_deploys_with_the_defaults_and_the_outputs_resolve(deploy, rehearsal):
    # Given the built, packaged and translated template, When it is created with the defaults
    created = deploy()
    stack, outputs, physical = created["stack"], created["outputs"], created["physical"]
    # Then the stack is complete and every output the README and the CLI use has a concrete value
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert outputs.keys() >= EXPECTED_OUTPUTS
    assert [key for key, value in outputs.items() if not value or "${" in value or "Fn::" in value] == []
    api_id = created["substituted"]["HttpApi"]
    assert outputs["ApiUrl"] == f"https://{api_id}.execute-api.{REGION}.amazonaws.com"
    assert outputs["CallbackUrl"] == f"{outputs['ApiUrl']}/oauth/callback"
    session = created["session"]
    assert session.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]["TableStatus"]
    assert (
        session.client("secretsmanager").describe_secret(SecretId=outputs["SecretArn"])["ARN"] == outputs["SecretArn"]
    )
    # (moto keeps a CloudFormation key's policy as a dict, on which its DescribeKey fails: list instead)
    assert outputs["TokenKeyArn"] in {k["KeyArn"] for k in session.client("kms").list_keys()["Keys"]}
    # And no function reserves concurrency (a new account's limit is often 10), the worker's
    # queue caps it instead
    lambda_ = session.client("lambda")
    for logical_id in FUNCTIONS:
        # GetFunction names Concurrency only for a function that reserves some
        assert "Concurrency" not in lambda_.get_function(FunctionName=physical[logical_id])
    (mapping,) = lambda_.list_event_source_mappings(FunctionName=physical["RefreshWorkerFunction"])[
        "EventSourceMappings"
    ]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    # And the connection events read the table's own stream, from its first record
    (stream,) = lambda_.list_event_source_mappings(FunctionName=physical["ConnectionEventsFunction"])[
        "EventSourceMappings"
    ]
    table = session.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    assert (stream["EventSourceArn"], stream["StartingPosition"]) == (table["LatestStreamArn"], "TRIM_HORIZON")
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    # And the only resources moto skipped are the ones the module's docstring names
    assert created["skipped"] == SKIPPED_BY_MOTO
    # And the layer was published from the uploaded artifact (moto does not attach it to the
    # functions: its CloudFormation drops a function's Layers, Architectures and LoggingConfig)
    (layer,) = lambda_.list_layers()["Layers"]
    assert layer["LatestMatchingVersion"]["CompatibleRuntimes"] == ["python3.13"]
    prepared, create = rehearsal["prepared_seconds"], created["create_seconds"]
    print(f"rehearsal: packaged and translated in {prepared:.1f} s; created in {create:.1f} s")


def test_the_translated_api_has_every_route_of_the_template(deploy, rehearsal, template):
    # Given the stack, and the translated OpenAPI body with the functions' ARNs resolved
    created = deploy()
    session, physical = created["session"], created["physical"]
    lambda_ = session.client("lambda")
    refs = {"AWS::StackName": STACK, "AWS::Partition": "aws", "AWS::Region": REGION}
    for logical_id in FUNCTIONS:
        refs[f"{logical_id}.Arn"] = lambda_.get_function(FunctionName=physical[logical_id])["Configuration"][
            "FunctionArn"
        ]
    body = tpl.resolve(rehearsal["template"]["Resources"]["HttpApi"]["Properties"]["Body"], refs)
    # When it is imported into the substituted HttpApi
    apigateway = session.client("apigatewayv2")
    api_id = created["substituted"]["HttpApi"]
    apigateway.reimport_api(ApiId=api_id, Body=json.dumps(body))
    # Then its routes are the template's, each integrated with the function the template names
    routes = {
        # moto's importer keeps SAM's x-amazon-apigateway-any-method as the method's name;
        # API Gateway imports it as ANY.
        r["RouteKey"].replace("X-AMAZON-APIGATEWAY-ANY-METHOD ", "ANY "): r["Target"]
        for r in apigateway.get_routes(ApiId=api_id)["Items"]
    }
    integrations = {i["IntegrationId"]: i["IntegrationUri"] for i in apigateway.get_integrations(ApiId=api_id)["Items"]}
    expected = {r.route_key: r.function for r in tpl.http_routes(template)}
    assert routes.keys() == expected.keys()
    for route_key, target in routes.items():
        assert refs[f"{expected[route_key]}.Arn"] in integrations[target.removeprefix("integrations/")]


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_a_reservation_is_applied_when_its_parameter_is_set(deploy, logical_id):
    # When the stack is created with one function's reservation set
    amount = 2 if logical_id == "RefreshWorkerFunction" else 20
    created = deploy(**{FUNCTIONS[logical_id]: str(amount)})
    # Then moto's Lambda reports it on that function, and on no other
    lambda_ = created["session"].client("lambda")
    reserved = {
        name: lambda_.get_function(FunctionName=created["physical"][name]).get("Concurrency") for name in FUNCTIONS
    }
    assert {name: value for name, value in reserved.items() if value} == {
        logical_id: {"ReservedConcurrentExecutions": amount}
    }


def test_the_cli_and_the_client_find_the_api_from_the_stack_outputs(deploy, capsys):
    # Given the stack created with the defaults
    created = deploy()
    api_url = created["outputs"]["ApiUrl"]
    # When the client and `apicbase-broker --stack-name` look it up (HTTP answered by responses,
    # started inside moto, which mocks requests too)
    client = BrokerClient.from_stack(STACK, region=REGION)
    with responses.RequestsMock() as http:
        http.get(f"{api_url}/connections", json={"connections": [], "next_cursor": None})
        code = main(["--stack-name", STACK, "--region", REGION, "--json", "list"])
        # Then both use the ApiUrl output, and the CLI's request went there, signed
        assert code == 0, capsys.readouterr().err
        assert http.calls[0].request.url.startswith(f"{api_url}/connections?")
        assert "/execute-api/aws4_request" in http.calls[0].request.headers["Authorization"]
    assert client.api_url == api_url


def test_each_deployed_role_is_the_role_the_local_run_enforces(deploy, template):
    # Given the stack created with the defaults (roles built by SAM's translator, created by
    # CloudFormation, intrinsics resolved to the deployed resources)
    created = deploy()
    session, physical, outputs = created["session"], created["physical"], created["outputs"]
    sqs = session.client("sqs")
    table = session.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    refs = {
        "AWS::StackName": STACK,
        "AWS::Region": REGION,
        "AWS::AccountId": created["stack"]["StackId"].split(":")[4],
        "ConnectionsTable": outputs["TableName"],
        "ConnectionsTable.Arn": table["TableArn"],
        "ConnectionsTable.StreamArn": table["LatestStreamArn"],
        "TokenKey.Arn": outputs["TokenKeyArn"],
        "ClientCredentialsSecret": outputs["SecretArn"],
        **{
            f"{queue}.Arn": sqs.get_queue_attributes(QueueUrl=physical[queue], AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            for queue in ("RefreshQueue", "ConnectionEventsDeadLetterQueue")
        },
    }
    iam_client, lambda_ = session.client("iam"), session.client("lambda")
    for logical_id in tpl.functions(template):
        # When its role's inline policies are read back from IAM
        role = lambda_.get_function(FunctionName=physical[logical_id])["Configuration"]["Role"].rsplit("/", 1)[1]
        documents = [
            iam_client.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam_client.list_role_policies(RoleName=role)["PolicyNames"]
        ]
        # (moto's CloudFormation keeps each document as Python's repr of it)
        documents = [ast.literal_eval(d) if isinstance(d, str) else d for d in documents]
        deployed = [statement for document in documents for statement in iam.as_list(document["Statement"])]
        # Then they are exactly the statements the local run evaluates every call against
        assert deployed == iam.statements(template, logical_id, refs), logical_id


def test_the_layer_ships_the_client_its_helper_wraps(rehearsal):
    # Given the layer as sam build zipped it (get_access_token is a wrapper over apicbase_broker)
    with zipfile.ZipFile(io.BytesIO(rehearsal["artifacts"]["BrokerLayer"])) as layer:
        shipped = set(layer.namelist())
    # Then the client's package is there, beside the layer's own, from the same source
    for module in ("__init__", "client", "errors", "signing", "tokens"):
        assert f"python/apicbase_broker/{module}.py" in shipped
    assert "python/apicbase_oauth/consumer.py" in shipped


# --- a stack's life: connect, update, delete, deploy again adopting what was kept ---------------
APICBASE = {
    "ApicbaseAuthorizeUrl": fakes.AUTHORIZE_URL,
    "ApicbaseTokenUrl": fakes.TOKEN_URL,
    "ApicbaseIntrospectUrl": fakes.INTROSPECT_URL,
    "ApicbaseRevokeUrl": fakes.REVOKE_URL,
}
KEPT = {
    "ConnectionsTable": "ExistingTableName",
    "TokenKey": "ExistingKeyArn",
    "ClientCredentialsSecret": "ExistingSecretArn",
}
ADOPTED_FROM = {
    "ExistingTableName": "TableName",
    "ExistingTableStreamArn": "TableStreamArn",
    "ExistingKeyArn": "TokenKeyArn",
    "ExistingSecretArn": "SecretArn",
}


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> Any:
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["--stack-name", STACK, "--region", REGION, *args])
    return code, capsys.readouterr().out


def _connect(served: ServedStack, apicbase: fakes.FakeApicbase, connection_id: str) -> str:
    """A library connected as a person does it: connect_url in a browser, Apicbase's sign-in,
    the callback; returns the access token Apicbase issued."""
    session = BrokerClient(served.api_url, region=REGION).connect(connection_id)
    with requests.Session() as browser:
        to_apicbase = browser.get(session["connect_url"], allow_redirects=False, timeout=30)
        state = parse_qs(urlsplit(to_apicbase.headers["Location"]).query)["state"][0]
        code = apicbase.issue_code()
        page = browser.get(session["redirect_uri"], params={"code": code, "state": state}, timeout=30)
    assert page.status_code == 200, page.text
    (access,) = (token for token in apicbase.access_tokens if token not in apicbase.revoked)
    return access


def test_a_connection_outlives_an_update_a_delete_and_a_redeploy_that_adopts_the_kept_resources(
    deploy, template, capsys, monkeypatch
):
    apicbase = fakes.FakeApicbase(reuse_protection=True)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        apicbase.register(http)
        # Given the stack as a new account gets it (Apicbase's URLs pointed at the fake)
        first = deploy(**APICBASE)
        # And the client's credentials written by set-credentials (the secret starts as the placeholder)
        assert _cli(capsys, monkeypatch, "doctor")[0] == 1
        code, out = _cli(capsys, monkeypatch, "set-credentials", stdin=f"{fakes.CLIENT_ID}\n{fakes.CLIENT_SECRET}\n")
        assert code == 0, out
        # And a library connected through the functions CloudFormation created
        access = _connect(ServedStack(first, template, http, monkeypatch), apicbase, "lib-42")
        # When the stack is updated with a changed parameter
        updated = _update(first, TokenLeewaySeconds="600")
        lambda_ = first["session"].client("lambda")
        environment = lambda_.get_function_configuration(FunctionName=updated["physical"]["ConnectionsFunction"])
        assert str(environment["Environment"]["Variables"]["TOKEN_LEEWAY_SECONDS"]) == "600"
        # And deleted
        first["session"].client("cloudformation").delete_stack(StackName=STACK)
        # Then the table, the key and the secret are still there, the key usable
        session = first["session"]
        assert session.client("dynamodb").describe_table(TableName=first["outputs"]["TableName"])
        key = session.client("kms").describe_key(KeyId=first["outputs"]["TokenKeyArn"])["KeyMetadata"]
        assert key["KeyState"] == "Enabled"
        assert session.client("secretsmanager").describe_secret(SecretId=first["outputs"]["SecretArn"])
        # When the stack is deployed again, adopting them
        adopting = {parameter: first["outputs"][output] for parameter, output in ADOPTED_FROM.items()}
        second = deploy(**APICBASE, **adopting)
        # Then it created none of them and names the adopted ones
        assert not set(KEPT) & second["physical"].keys()
        assert {output: second["outputs"][output] for output in ADOPTED_FROM.values()} == {
            output: first["outputs"][output] for output in ADOPTED_FROM.values()
        }
        # And the connection stored before the delete is read back through the new stack's functions
        served = ServedStack(second, template, http, monkeypatch)
        client = BrokerClient(served.api_url, region=REGION)
        assert client.connection("lib-42")["status"] == "active"
        assert client.token("lib-42") == access
        # And it refreshes: opened and sealed again with the adopted key, the rotated token kept
        refreshed = client.request("POST", "/connections/lib-42/refresh")
        assert refreshed["refresh_count"] == 1
        assert client.request("GET", "/connections/lib-42/token")["access_token"] != access
        # And the doctor finds every connection and passes all that moto creates
        code, out = _cli(capsys, monkeypatch, "--json", "doctor")
    checks = {(c["name"], c["verdict"]): c["detail"] for c in json.loads(out)["checks"]}
    assert checks.keys() == {
        ("stack", "PASS"),
        ("callback URL", "INFO"),
        ("credentials", "PASS"),
        ("token key", "PASS"),
        ("table", "WARN"),  # moto's table has no point-in-time recovery and no TTL
        ("alarms", "WARN"),  # moto creates no alarm
        ("schedule", "FAIL"),  # moto creates no schedule
        ("dead letters", "PASS"),
        ("connections", "PASS"),
        *(("errors", "PASS") for _ in FUNCTIONS),
    }
    assert checks["connections", "PASS"] == "1 connection(s), none needs reauthorization"
    assert checks["callback URL", "INFO"].startswith(f"{second['outputs']['CallbackUrl']}\n")
    assert code == 1


# --- make deploy against moto's stacks (scripts/deploy in this process, sam's commands recorded) ---
def _make_deploy(session: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, stdin: str = "") -> Any:
    path = str(ROOT / "scripts" / "deploy")  # no .py: the loader is named
    spec = importlib.util.spec_from_file_location("make_deploy", path, loader=SourceFileLoader("make_deploy", path))
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ran: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = script.main(["--stack-name", STACK, "--region", REGION], session=session, run=run)
    said = capsys.readouterr()
    return code, said.out + said.err, ran


def test_make_deploy_offers_to_adopt_what_a_deleted_stack_kept(deploy, capsys, monkeypatch):
    # Given a stack that was deleted
    first = deploy()
    first["session"].client("cloudformation").delete_stack(StackName=STACK)
    # When make deploy runs for that name, the offer to adopt taken with Enter
    code, out, ran = _make_deploy(first["session"], monkeypatch, capsys, stdin="\n")
    # Then it names what the deleted stack kept and sam deploy gets the adoption parameters (the
    # secret here is a substitute outside the stack, so only the table and the key are found)
    adopting = [
        f"ExistingTableName={first['outputs']['TableName']}",
        f"ExistingKeyArn={first['outputs']['TokenKeyArn']}",
        f"ExistingTableStreamArn={first['outputs']['TableStreamArn']}",
    ]
    assert f"No stack {STACK} in {REGION}, but a deleted one kept these" in out
    assert "Adopt them? [Y/n]: \n" in out
    assert ran[0] == ["make", "--no-print-directory", "build"]
    assert ran[1][:2] == [".venv-sam/bin/sam", "deploy"]
    assert ran[1][-4:] == ["--parameter-overrides", *adopting]
    # And as the recorded sam deploy created nothing, it says the stack was not deployed
    assert (code, out.splitlines()[-1]) == (1, f"Stack {STACK} was not deployed (the changeset was not applied).")


def test_make_deploy_updates_a_stack_and_points_to_the_next_steps(deploy, capsys, monkeypatch):
    # Given a deployed stack
    first = deploy()
    # When make deploy runs again
    code, out, ran = _make_deploy(first["session"], monkeypatch, capsys)
    # Then it updates it, adopting nothing (the parameters keep their values), and prints the
    # callback URL to register and the commands that come next
    assert code == 0, out
    assert f"Updating stack {STACK} (CREATE_COMPLETE) in {REGION}" in out
    assert "--parameter-overrides" not in ran[1]
    assert f"       {first['outputs']['CallbackUrl']}\n" in out
    assert f"apicbase-broker set-credentials --stack-name {STACK} --region {REGION}" in out


def test_make_deploy_will_not_adopt_a_kept_table_without_its_stream(deploy, capsys, monkeypatch):
    # Given a deleted stack whose kept table has no stream (one from before the connection events)
    first = deploy()
    session = first["session"]
    session.client("cloudformation").delete_stack(StackName=STACK)
    table = first["outputs"]["TableName"]
    session.client("dynamodb").update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    # When make deploy runs for that name
    code, out, ran = _make_deploy(session, monkeypatch, capsys, stdin="\n")
    # Then it deploys nothing and says how to give the table its stream
    assert code == 2
    assert ran == []
    assert f"aws dynamodb update-table --table-name {table} --stream-specification" in out
