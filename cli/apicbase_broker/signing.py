"""SigV4 for the broker's API (service ``execute-api``), as botocore signs, on requests' requests."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SERVICE = "execute-api"
# Set by the signer; a caller's own values never pass (its Authorization is not for the broker).
SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


def is_local(url: str) -> bool:
    """Plain http on loopback: the local run (python -m local.run), which is served unsigned."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def region_from_url(url: str) -> str | None:
    """``<id>.execute-api.<region>.amazonaws.com`` names its region; a custom domain does not."""
    labels = (urlsplit(url).hostname or "").split(".")
    if len(labels) >= 4 and labels[1] == "execute-api":
        return labels[2]
    return None


def sign(
    method: str, url: str, body: bytes | None, headers: dict[str, str], *, credentials: Any, region: str
) -> dict[str, str]:
    """``headers`` plus the SigV4 headers for the request (method, path, query, body and ``headers``)."""
    request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return dict(request.headers.items())


class ExecuteApiAuth(requests.auth.AuthBase):
    """Signs each prepared request for execute-api; with no credentials (the local run) only
    removes the caller's Authorization. Signs Content-Type and X-Amz-* besides host, method,
    path, query and body: a proxy may rewrite the others (Connection, Accept-Encoding)."""

    def __init__(self, credentials: Any, region: str | None) -> None:
        self.credentials = credentials  # botocore credentials; refreshable ones are frozen per request
        self.region = region

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        for name in SIGNATURE_HEADERS:
            request.headers.pop(name, None)
        if self.credentials is None:
            return request
        if isinstance(request.body, str):
            # Sign the bytes that are sent (requests would leave the encoding to http.client).
            request.body = request.body.encode()
            request.prepare_content_length(request.body)
        if request.body is not None and not isinstance(request.body, bytes):
            raise TypeError("a streamed body cannot be signed; pass bytes, str, data= or json=")
        signed = {
            k: v for k, v in request.headers.items() if k.lower() == "content-type" or k.lower().startswith("x-amz-")
        }
        frozen = self.credentials.get_frozen_credentials()
        request.headers.update(
            sign(
                str(request.method), str(request.url), request.body, signed, credentials=frozen, region=str(self.region)
            )
        )
        return request

    def __repr__(self) -> str:
        return f"ExecuteApiAuth(region={self.region!r})"
