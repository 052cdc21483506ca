"""How the CLI finds the API and signs for it (no network: HTTP is answered by responses, AWS is moto)."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
import responses
from moto import mock_aws

from apicbase_broker_cli.main import main

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
FIXED = datetime.datetime(2026, 11, 27, 12, 0, 0)


@pytest.fixture
def fixed_time(monkeypatch):
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: FIXED)


@contextmanager
def answering() -> Iterator:
    """The requests the CLI sends (``calls[i].request``); each answered 200 with an empty list."""
    page = {"connections": [], "next_cursor": None}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, re.compile(r"https?://(abc123\.|127\.0\.0\.1|broker\.).*"), json=page)
        yield mock.calls


@pytest.fixture
def sent():
    with answering() as calls:
        yield calls


def test_the_deployed_api_is_called_signed_with_the_url_s_region(sent, fixed_time):
    # When the CLI lists connections of a deployed API
    code = main(["--api-url", API, "list"])
    # Then the request carries a SigV4 Authorization for execute-api in the URL's region
    headers = sent[0].request.headers
    assert code == 0
    assert sent[0].request.url == f"{API}/connections?limit=50"
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]


def test_the_local_run_is_called_unsigned(sent):
    # When the CLI talks to http on loopback
    assert main(["--api-url", "http://127.0.0.1:3000", "list"]) == 0
    # Then nothing is signed
    assert "Authorization" not in sent[0].request.headers


def test_the_api_url_comes_from_the_stack_outputs(fixed_time):
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
        # When the CLI is given the stack's name (HTTP answered inside moto, which mocks requests too)
        with answering() as sent:
            code = main(["--stack-name", "broker", "--region", "eu-west-1", "list"])
            # Then it called that API
            assert code == 0
            assert sent[0].request.url.startswith(API)


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
    assert sent[0].request.url.startswith("http://127.0.0.1:3999/")


def test_plain_http_to_another_host_is_refused(sent, capsys):
    # When the URL is http but not loopback
    code = main(["--api-url", "http://broker.example.com", "list"])
    # Then nothing is sent and the exit code is 2
    assert code == 2
    assert len(sent) == 0
    assert "https" in capsys.readouterr().err


def test_an_unreachable_api_exits_1_with_a_hint(offline_cli):
    # When nothing listens at the URL
    run = offline_cli("list")
    # Then exit code 1 and one line that names what to check
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "--api-url" in run.err
