"""How the CLI finds the API and signs for it (no network: urlopen is replaced, AWS is moto)."""

from __future__ import annotations

import datetime
import io
import json

import boto3
import pytest
from apicbase_broker_cli import client
from apicbase_broker_cli.main import main
from botocore.credentials import Credentials
from moto import mock_aws

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
FIXED = datetime.datetime(2026, 11, 27, 12, 0, 0)
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token="session-token")


@pytest.fixture
def fixed_time(monkeypatch):
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: FIXED)


class Answer(io.BytesIO):
    status = 200

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def sent(monkeypatch) -> list:
    """The requests the CLI would send; each answered 200 with an empty list."""
    requests: list = []

    def urlopen(request, timeout):
        requests.append(request)
        return Answer(json.dumps({"connections": [], "next_cursor": None}).encode())

    monkeypatch.setattr(client.urllib.request, "urlopen", urlopen)
    return requests


def test_signing_matches_aws_published_get_vanilla_vector(monkeypatch):
    # Given AWS's SigV4 test suite case "get-vanilla" (service "service", us-east-1, 20150830T123600Z)
    monkeypatch.setattr(client, "SERVICE", "service")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: datetime.datetime(2015, 8, 30, 12, 36))
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    # When GET / is signed
    url = "https://example.amazonaws.com/"
    headers = client.sign("GET", url, None, {}, credentials=credentials, region="us-east-1")
    # Then the signature is the published one
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_signing_is_deterministic_and_scoped_to_execute_api(fixed_time):
    # Given fixed credentials and a fixed time
    def signed() -> dict:
        return client.sign(
            "POST", f"{API}/connections/lib-1/refresh", b"{}", {}, credentials=CREDENTIALS, region="eu-west-1"
        )

    # When the same request is signed twice
    first, second = signed(), signed()
    # Then the headers are identical, dated, scoped to execute-api and carry the session token
    assert first == second
    assert first["X-Amz-Date"] == "20261127T120000Z"
    assert first["X-Amz-Security-Token"] == "session-token"
    assert "Credential=AKIDEXAMPLE/20261127/eu-west-1/execute-api/aws4_request" in first["Authorization"]


def test_the_signature_covers_the_body(fixed_time):
    # When two bodies are signed, Then their signatures differ
    def signature(body: bytes) -> str:
        headers = client.sign("PUT", f"{API}/connections/a/tokens", body, {}, credentials=CREDENTIALS, region="x")
        return headers["Authorization"].rsplit("=", 1)[1]

    assert signature(b'{"a":1}') != signature(b'{"a":2}')


def test_the_deployed_api_is_called_signed_with_the_url_s_region(sent, fixed_time):
    # When the CLI lists connections of a deployed API
    code = main(["--api-url", API, "list"])
    # Then the request carries a SigV4 Authorization for execute-api in the URL's region
    headers = dict(sent[0].header_items())
    assert code == 0
    assert sent[0].full_url == f"{API}/connections?limit=50"
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]


def test_the_local_run_is_called_unsigned(sent):
    # When the CLI talks to http on loopback
    assert main(["--api-url", "http://127.0.0.1:3000", "list"]) == 0
    # Then nothing is signed
    assert "Authorization" not in dict(sent[0].header_items())


def test_the_api_url_comes_from_the_stack_outputs(sent, fixed_time):
    # Given a stack with an ApiUrl output
    with mock_aws():
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="broker",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                    "Outputs": {"ApiUrl": {"Value": API}},
                }
            ),
        )
        # When the CLI is given the stack's name
        code = main(["--stack-name", "broker", "--region", "eu-west-1", "list"])
    # Then it called that API
    assert code == 0
    assert sent[0].full_url.startswith(API)


def test_an_unknown_stack_is_a_usage_error(capsys):
    # When the stack does not exist
    with mock_aws():
        code = main(["--stack-name", "nope", "--region", "eu-west-1", "list"])
    # Then exit code 2, saying which option to check
    assert code == 2
    assert "--stack-name" in capsys.readouterr().err


def test_no_api_url_is_a_usage_error(monkeypatch, capsys):
    # Given neither --api-url, the environment variable nor a stack
    monkeypatch.delenv("APICBASE_BROKER_API_URL", raising=False)
    monkeypatch.delenv("APICBASE_BROKER_STACK", raising=False)
    # When a command runs, Then exit code 2 and the ways to name the API
    assert main(["list"]) == 2
    assert "--api-url" in capsys.readouterr().err


def test_the_api_url_can_come_from_the_environment(sent, monkeypatch):
    # Given the URL in APICBASE_BROKER_API_URL
    monkeypatch.setenv("APICBASE_BROKER_API_URL", "http://127.0.0.1:3999")
    # When a command runs without --api-url, Then it calls that URL
    assert main(["list"]) == 0
    assert sent[0].full_url.startswith("http://127.0.0.1:3999/")


def test_plain_http_to_another_host_is_refused(sent, capsys):
    # When the URL is http but not loopback
    code = main(["--api-url", "http://broker.example.com", "list"])
    # Then nothing is sent and the exit code is 2
    assert code == 2
    assert sent == []
    assert "https" in capsys.readouterr().err


def test_an_unreachable_api_exits_1_with_a_hint(offline_cli):
    # When nothing listens at the URL
    run = offline_cli("list")
    # Then exit code 1 and one line that names what to check
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "--api-url" in run.err


@pytest.mark.parametrize(
    ("url", "region"),
    [(API, "eu-west-1"), ("https://oauth.example.com", None), ("http://127.0.0.1:3000", None)],
)
def test_region_from_url(url, region):
    assert client.region_from_url(url) == region
