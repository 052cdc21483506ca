"""HTTP to the broker's admin API: SigV4-signed for the deployed API, plain for the local run."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SERVICE = "execute-api"
TIMEOUT_SECONDS = 35  # API Gateway gives the function 30 s; a little more so we see its answer


class UsageError(Exception):
    """Bad arguments or configuration (exit code 2)."""


class ApiError(Exception):
    """The API answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


def is_local(url: str) -> bool:
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
    """The headers of a SigV4-signed request (service execute-api), as botocore signs them."""
    request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return dict(request.headers.items())


class AdminApi:
    def __init__(self, base_url: str, *, credentials: Any = None, region: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise UsageError(f"the API URL {base_url!r} is not an http(s) URL; pass --api-url https://...")
        if parts.scheme == "http" and not is_local(base_url):
            raise UsageError("plain http is only for the local run on 127.0.0.1; use the https API URL")
        if not is_local(base_url) and (credentials is None or not region):
            raise UsageError("no AWS credentials or region to sign with; set AWS_PROFILE or AWS_REGION")
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.region = region

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None) -> Response:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.credentials is not None and not is_local(url):
            frozen = self.credentials.get_frozen_credentials()
            headers = sign(method, url, data, headers, credentials=frozen, region=str(self.region))
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) only)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
                return Response(answer.status, _decode(answer.read()))
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, _decode(exc.read())) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"cannot reach {self.base_url} ({reason})") from None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}


def _api_error(status: int, body: Any) -> ApiError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(status, str(error.get("code", "error")), str(error.get("message", "")))
    # API Gateway's own answers (SigV4 refused, throttled) are {"message": "..."}.
    message = body.get("message") if isinstance(body, dict) else None
    code = {403: "forbidden", 429: "throttled"}.get(status, "http_error")
    return ApiError(status, code, str(message or f"HTTP {status}"))
