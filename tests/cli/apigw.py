"""A tiny in-process stand-in for the HttpApi: serves template.yaml's routes on 127.0.0.1 by
turning each request into an API Gateway payload-2.0 event for the handler module."""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local import template as tpl

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def payload_v2(route: tpl.Route, method: str, target: str, headers: dict[str, str], body: bytes, params: dict) -> dict:
    parts = urlsplit(target)
    return {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "queryStringParameters": dict(parse_qsl(parts.query)) or None,
        "pathParameters": params or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("Host", "127.0.0.1"),
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": uuid.uuid4().hex,
            "routeKey": route.route_key,
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
            "authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:user/operator"}},
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


@dataclass
class Served:
    url: str
    # What the handlers printed (logs, EMF metrics), kept apart from the CLI's own stdout.
    logs: io.StringIO = field(default_factory=io.StringIO)


@contextmanager
def serve(template: dict[str, Any], handlers: dict[str, ModuleType], context: Any) -> Iterator[Served]:
    """Serve the routes of the functions in ``handlers`` (logical id -> module) on 127.0.0.1."""
    routes = [r for r in tpl.http_routes(template) if r.function in handlers]
    served = Served(url="")

    class Adapter(BaseHTTPRequestHandler):
        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            for route in routes:
                match = route.pattern().match(path)
                if match and route.method == self.command:
                    event = payload_v2(route, self.command, self.path, dict(self.headers), body, match.groupdict())
                    # The client waits for this answer, so nothing else prints meanwhile.
                    with redirect_stdout(served.logs):
                        result = handlers[route.function].lambda_handler(event, context)
                    self._answer(result)
                    return
            self._answer({"statusCode": 404, "body": '{"message":"Not Found"}'})

        def _answer(self, result: dict[str, Any]) -> None:
            raw = result.get("body") or ""
            payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
            self.send_response(result["statusCode"])
            for name, value in (result.get("headers") or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the request line carries query strings."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Adapter)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
