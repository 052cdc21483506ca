"""A stand-in for API Gateway (HTTP API, payload format 2.0) on 127.0.0.1.

Serves the HttpApi routes read from template.yaml by turning each request into the event API
Gateway would send, invoking the function (in its pool of worker processes), and turning its
answer back into HTTP. There is no SigV4 here: AWS_IAM routes get a fake identity saying so.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socketserver
import time
from collections.abc import Callable, Iterable, Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.aws import ACCOUNT
from local.pool import FunctionError
from local.template import Route

API_ID = "local"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
UNSIGNED_CALLER = "local-unsigned"
IAM_IDENTITY = {
    "accessKey": UNSIGNED_CALLER,
    "accountId": ACCOUNT,
    "callerId": UNSIGNED_CALLER,
    "cognitoIdentity": None,
    "principalOrgId": None,
    "userArn": f"arn:aws:iam::{ACCOUNT}:user/{UNSIGNED_CALLER}",
    "userId": UNSIGNED_CALLER,
}
# Bodies of these types reach the function as text; anything else base64-encoded, as API Gateway does.
TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")

Invoke = Callable[[str, dict[str, Any]], Any]


def match(routes: Iterable[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        found = route.pattern().match(path)
        if route.method in (method, "ANY") and found:
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None


def query_parameters(raw_query: str) -> dict[str, str]:
    """Repeated keys are joined with commas, as API Gateway does in payload 2.0."""
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in params.items()}


def build_event(
    route: Route,
    path_parameters: Mapping[str, str],
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload 2.0 event API Gateway sends for one request."""
    now = time.time() if now is None else now
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        else:
            merged[key] = f"{merged[key]},{value}" if key in merged else value
    domain = merged.get("host", "127.0.0.1")
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "domainName": domain,
        "domainPrefix": domain.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": base64.b64encode(secrets.token_bytes(10)).decode(),
        "routeKey": route.route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if route.authorizer == "AWS_IAM":
        request_context["authorizer"] = {"iam": dict(IAM_IDENTITY)}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        event["queryStringParameters"] = query_parameters(raw_query)
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        content_type = merged.get("content-type", "").lower()
        if content_type.startswith(TEXT_TYPES):
            with contextlib.suppress(UnicodeDecodeError):
                event["body"] = body.decode("utf-8")
        if "body" not in event:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body from a handler's answer, read as API Gateway reads payload 2.0."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # A function may answer plain JSON: API Gateway sends it as a 200 application/json.
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers: list[tuple[str, str]] = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(value)) for value in values)
    headers.extend(("Set-Cookie", cookie) for cookie in result.get("cookies") or [])
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return int(result["statusCode"]), headers, body


def _api_gateway_error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps({"message": message}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: Adapter
    server_version = "local-api-gateway"

    def _serve(self) -> None:
        started = time.monotonic()
        parts = urlsplit(self.path)
        status, headers, body = self._answer(parts.path or "/", parts.query)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self.server.log_requests:
            # The path only, never the query string: the callback's carries the code and the state.
            self.server.log(f"{self.command} {parts.path} {status} {(time.monotonic() - started) * 1000:.0f}ms")

    def _answer(self, path: str, query: str) -> tuple[int, list[tuple[str, str]], bytes]:
        found = match(self.server.routes, self.command, path)
        if found is None:
            return _api_gateway_error(404, "Not Found")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return _api_gateway_error(400, "Bad Request")
        if length > MAX_BODY_BYTES:
            return _api_gateway_error(413, "Request Entity Too Large")
        body = self.rfile.read(length) if length > 0 else b""
        route, path_parameters = found
        event = build_event(
            route,
            path_parameters,
            method=self.command,
            raw_path=path,
            raw_query=query,
            headers=_header_items(self.headers),
            body=body,
            source_ip=self.client_address[0],
        )
        try:
            return http_response(self.server.invoke(route.function, event))
        except FunctionError as exc:  # 500 for a function error, 502 for a worker that died
            self.server.log(f"{route.function} {exc.detail}")
            return _api_gateway_error(exc.status, exc.message)
        except Exception as exc:  # a crashed function is API Gateway's 500, not a dropped connection
            # The type only: an exception's text could carry request data.
            self.server.log(f"{route.function} crashed: {type(exc).__name__}")
            return _api_gateway_error(500, "Internal Server Error")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # BaseHTTPRequestHandler would log the request line, query string included.
        pass


def _header_items(headers: Message) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in headers.items()]


class Adapter(ThreadingHTTPServer):
    """The HTTP server. Binds at construction (so a port in use fails early); ``serve_forever`` serves."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        routes: list[Route],
        invoke: Invoke,
        log: Callable[[str], None],
        *,
        log_requests: bool = True,
    ) -> None:
        self.routes = routes
        self.invoke = invoke
        self.log = log
        self.log_requests = log_requests
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with getfqdn, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_name}:{self.server_port}"
