"""SigV4 for execute-api, as botocore signs: AWS's published vector, and what the signature covers."""

from __future__ import annotations

import datetime

import pytest
import requests
from botocore.credentials import Credentials

from apicbase_broker import ExecuteApiAuth, signing

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
FIXED = datetime.datetime(2026, 11, 27, 12, 0, 0)
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token="session-token")


@pytest.fixture
def fixed_time(monkeypatch):
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: FIXED)


def signed(method: str, url: str, **kwargs) -> requests.PreparedRequest:
    """The request as ExecuteApiAuth leaves it for the wire."""
    request = requests.Request(method, url, **kwargs).prepare()
    return ExecuteApiAuth(CREDENTIALS, "eu-west-1")(request)


def signature(request: requests.PreparedRequest) -> str:
    return request.headers["Authorization"].rsplit("Signature=", 1)[1]


def test_signing_matches_aws_published_get_vanilla_vector(monkeypatch):
    # Given AWS's SigV4 test suite case "get-vanilla" (service "service", us-east-1, 20150830T123600Z)
    monkeypatch.setattr(signing, "SERVICE", "service")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: datetime.datetime(2015, 8, 30, 12, 36))
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    # When GET / is signed
    headers = signing.sign(
        "GET", "https://example.amazonaws.com/", None, {}, credentials=credentials, region="us-east-1"
    )
    # Then the signature is the published one
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_signing_is_deterministic_and_scoped_to_execute_api(fixed_time):
    # When the same request is signed twice
    first, second = (signed("POST", f"{API}/connections/lib-1/refresh", data=b"{}") for _ in range(2))
    # Then the headers are identical, dated, scoped to execute-api and carry the session token
    assert first.headers == second.headers
    assert first.headers["X-Amz-Date"] == "20261127T120000Z"
    assert first.headers["X-Amz-Security-Token"] == "session-token"
    assert "Credential=AKIDEXAMPLE/20261127/eu-west-1/execute-api/aws4_request" in first.headers["Authorization"]


@pytest.mark.parametrize(
    ("changed", "kwargs"),
    [
        ("method", {"method": "PUT"}),
        ("path", {"url": f"{API}/connections/lib-1/apicbase/api/v2/recipes/"}),
        ("query", {"params": {"page": "3"}}),
        ("body", {"data": b'{"name": "other"}'}),
        ("content type", {"headers": {"Content-Type": "text/plain"}}),
    ],
)
def test_the_signature_covers_method_path_query_body_and_content_type(fixed_time, changed, kwargs):
    # Given a request to the proxy and the same request with one part changed
    base = {
        "method": "POST",
        "url": f"{API}/connections/lib-1/apicbase/api/v2/products/",
        "params": {"page": "2"},
        "data": b'{"name": "flour"}',
        "headers": {"Content-Type": "application/json"},
    }
    # When both are signed, Then the signatures differ
    assert signature(signed(**base)) != signature(signed(**{**base, **kwargs})), changed


def test_a_text_body_is_signed_as_the_bytes_sent(fixed_time):
    # Given a str body with non-ASCII text
    request = signed("POST", f"{API}/x", data="crème brûlée", headers={"Content-Type": "text/plain"})
    # Then the body goes out as UTF-8 bytes, with their length, and that is what was signed
    assert request.body == "crème brûlée".encode()
    assert request.headers["Content-Length"] == str(len(request.body))
    assert signature(request) == signature(
        signed("POST", f"{API}/x", data=request.body, headers={"Content-Type": "text/plain"})
    )


def test_a_streamed_body_is_refused():
    # A generator cannot be hashed before it is sent
    with pytest.raises(TypeError, match="streamed"):
        signed("POST", f"{API}/x", data=(chunk for chunk in [b"a", b"b"]))


def test_the_caller_s_authorization_never_passes(fixed_time):
    # Given a caller that sets its own Authorization (an Apicbase bearer token, say)
    request = signed("GET", f"{API}/x", headers={"Authorization": "Bearer not-for-the-broker"})
    # Then the signature replaced it; unsigned (the local run) it is dropped
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    local = requests.Request("GET", "http://127.0.0.1:3000/x", headers={"Authorization": "Bearer t"}).prepare()
    assert "Authorization" not in ExecuteApiAuth(None, None)(local).headers


def test_the_signer_s_repr_holds_no_credentials():
    assert CREDENTIALS.secret_key not in repr(ExecuteApiAuth(CREDENTIALS, "eu-west-1"))
    assert "session-token" not in repr(ExecuteApiAuth(CREDENTIALS, "eu-west-1"))


@pytest.mark.parametrize(
    ("url", "region"),
    [(API, "eu-west-1"), ("https://oauth.example.com", None), ("http://127.0.0.1:3000", None)],
)
def test_region_from_url(url, region):
    assert signing.region_from_url(url) == region
