"""The README's quick start and examples/service_outside_lambda.py against a deployed stack, run
against responses and moto (tests/e2e/test_readme.py runs them against a local run)."""

from __future__ import annotations

import json
import logging
import re

import boto3
import pytest
import responses
from examples import service_outside_lambda as example
from moto import mock_aws

from apicbase_broker import BrokerClient
from tests.conftest import ROOT

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"


def readme_snippet() -> str:
    """The quick start's Python block that calls Apicbase."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**2. Call Apicbase through the broker**") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]


@pytest.fixture
def stack(monkeypatch):
    # The broker found by its stack's name, as on a machine with AWS credentials
    monkeypatch.delenv("APICBASE_BROKER_API_URL", raising=False)
    monkeypatch.setenv("APICBASE_BROKER_STACK", "apicbase-oauth-broker")
    with mock_aws():
        boto3.client("cloudformation").create_stack(
            StackName="apicbase-oauth-broker",
            TemplateBody=json.dumps(
                {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"ApiUrl": {"Value": API}}}
            ),
        )
        # started inside moto, which mocks requests too
        with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
            yield http


def test_the_readme_s_three_lines_call_apicbase_through_the_broker(stack):
    # Given the proxy answers the library's products, on two pages
    proxy = f"{API}/connections/lib-42/apicbase/api/v2/products/"
    following = "https://api.apicbase.com/api/v2/products/?page=2&page_size=200"
    stack.get(f"{proxy}?page_size=200", json={"results": [{"id": 1}], "next": following})
    stack.get(f"{proxy}?page=2&page_size=200", json={"results": [{"id": 2}], "next": None})
    # When the README's snippet runs
    scope: dict = {}
    exec(readme_snippet(), scope)
    # Then it got them through the broker, signed, and its code is three lines after the import
    assert scope["products"] == [{"id": 1}, {"id": 2}]
    assert stack.calls[0].request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    code = [line for line in readme_snippet().splitlines() if line and not line.startswith("from ")]
    assert len(code) == 3


def test_the_example_syncs_every_page_and_reports_a_library_to_reconnect(stack, caplog, monkeypatch):
    # Given lib-1 with two pages of products, and lib-2 whose grant is gone
    proxy = f"{API}/connections/lib-1/apicbase/api/v2/products/"
    following = "https://api.apicbase.com/api/v2/products/?page=2&page_size=200"
    stack.get(f"{proxy}?page_size=200", json={"results": [{}, {}], "next": following})
    stack.get(f"{proxy}?page=2&page_size=200", json={"results": [{}], "next": None})
    gone = {"error": {"code": "needs_reauthorization", "message": "connect it again"}}
    stack.get(f"{API}/connections/lib-2/apicbase/api/v2/products/?page_size=200", status=409, json=gone)
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # leave pytest's capture alone
    # When the example runs for both
    with caplog.at_level(logging.INFO, logger="apicbase-sync"):
        code = example.main(["lib-1", "lib-2"])
    # Then lib-1's three products were counted, lib-2 was reported, and the exit code says so
    assert "library lib-1: 3 products" in caplog.text
    assert "library lib-2 needs to be connected again" in caplog.text
    assert code == 1


def test_the_example_retries_once_when_the_broker_is_busy(stack, monkeypatch):
    busy = {"error": {"code": "refresh_in_progress", "message": "m"}}
    url = f"{API}/connections/lib-1/apicbase/api/v2/products/?page_size=200"
    stack.get(url, status=503, json=busy, headers={"Retry-After": "2"})
    stack.get(url, json={"results": [], "next": None})
    slept: list[float] = []
    monkeypatch.setattr(example.time, "sleep", slept.append)
    example.sync(BrokerClient.from_env(), "lib-1")
    assert slept == [2]
