"""A fake Apicbase token and introspection endpoint on 127.0.0.1, run as its own process so
that the benchmark process's CPU time is the broker's alone.

It rotates refresh tokens like django-oauth-toolkit (a refresh revokes the token presented),
keeps connections alive (HTTP/1.1) and counts requests and new TCP connections. Control
endpoints under ``/stub/`` seed pairs and read the counters.

    python -m bench.stub --client-id ID --client-secret S -p PORT
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

EXPIRES_IN = 604800
USERNAME = "chef@example.com"


class Apicbase:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.live_refresh: set[str] = set()
        self.used_codes: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def pair(self) -> tuple[str, str]:
        n = next(self._ids)
        access, refresh = f"access-{n:08d}", f"refresh-{n:08d}"
        self.live_refresh.add(refresh)
        return access, refresh

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.stats["token_requests"] += 1
            if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
                return 401, {"error": "invalid_client"}
            grant = form.get("grant_type")
            if grant == "authorization_code":
                code = form.get("code", "")
                if not code or code in self.used_codes:
                    self.stats["invalid_grant"] += 1
                    return 400, {"error": "invalid_grant"}
                self.used_codes.add(code)
            elif grant == "refresh_token":
                presented = form.get("refresh_token", "")
                if presented not in self.live_refresh:
                    self.stats["invalid_grant"] += 1
                    return 400, {"error": "invalid_grant"}
                self.live_refresh.discard(presented)
            else:
                return 400, {"error": "unsupported_grant_type"}
            access, refresh = self.pair()
        body = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": EXPIRES_IN,
            "token_type": "Bearer",
            "scope": "accounts library",
        }
        return 200, body

    def introspect(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.stats["introspections"] += 1
        body = {
            "active": True,
            "scope": "accounts library",
            "exp": int(time.time()) + EXPIRES_IN,
            "client_id": self.client_id,
            "username": USERNAME,
        }
        return 200, body

    def control(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if path == "/stub/pairs":
                return {"pairs": [self.pair() for _ in range(int(payload["count"]))]}
            if path == "/stub/stats":
                return dict(self.stats)
        raise KeyError(path)


def make_handler(apicbase: Apicbase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Apicbase's servers do

        def setup(self) -> None:
            super().setup()
            with apicbase.lock:
                apicbase.stats["connections_opened"] += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path.startswith("/stub/"):
                self._answer(200, apicbase.control(self.path, json.loads(raw or "{}")))
                return
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            if self.path == "/oauth/token/":
                self._answer(*apicbase.token(form))
            elif self.path == "/oauth/introspect/":
                self._answer(*apicbase.introspect(form))
            else:
                self._answer(404, {"error": "not_found"})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("-p", "--port", type=int, default=0)
    args = parser.parse_args(argv)
    apicbase = Apicbase(args.client_id, args.client_secret)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(apicbase))
    server.daemon_threads = True
    server.request_queue_size = 64
    print(f"stub listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
