"""A fake Apicbase token and introspection endpoint on 127.0.0.1, run as its own process so that
the benchmark process's CPU time is the broker's alone.

It rotates refresh tokens like django-oauth-toolkit (a refresh revokes the token presented, and a
revoked one gets invalid_grant), takes each authorization code once, keeps connections alive
(HTTP/1.1) and counts requests and new TCP connections. ``POST /stub/pairs {"count": N}`` seeds
token pairs; ``POST /stub/stats`` reads the counters.

    python -m bench.stub --client-id ID --client-secret S -p PORT
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

EXPIRES_IN = 604800
SCOPE = "accounts library"
USERNAME = "chef@example.com"
LIBRARY = "Bench Kitchen"


class Apicbase:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client = (client_id, client_secret)
        self.live_refresh: set[str] = set()
        self.used_codes: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def pair(self) -> list[str]:
        n = next(self._ids)
        self.live_refresh.add(f"refresh-{n:08d}")
        return [f"access-{n:08d}", f"refresh-{n:08d}"]

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.stats["token_requests"] += 1
            if (form.get("client_id"), form.get("client_secret")) != self.client:
                return 401, {"error": "invalid_client"}
            grant = form.get("grant_type")
            code, refresh = form.get("code", ""), form.get("refresh_token", "")
            if grant == "authorization_code" and code and code not in self.used_codes:
                self.used_codes.add(code)
            elif grant == "refresh_token" and refresh in self.live_refresh:
                self.live_refresh.discard(refresh)
            else:
                self.stats["invalid_grant"] += 1
                return 400, {"error": "invalid_grant"}
            access, refresh = self.pair()
        body = {"access_token": access, "refresh_token": refresh, "expires_in": EXPIRES_IN, "scope": SCOPE}
        return 200, {**body, "token_type": "Bearer"}

    def introspect(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.stats["introspections"] += 1
        exp = int(time.time()) + EXPIRES_IN
        return 200, {"active": True, "scope": SCOPE, "exp": exp, "client_id": self.client[0], "username": USERNAME}

    def user_info(self) -> tuple[int, dict[str, Any]]:
        """The API's user_info: the active library the callback's page names."""
        with self.lock:
            self.stats["user_infos"] += 1
        return 200, {"username": USERNAME, "active_library": {"id": 1, "name": LIBRARY}}

    def answer(self, path: str, raw: str) -> tuple[int, dict[str, Any]]:
        if path == "/oauth/token/":
            return self.token({k: v[0] for k, v in parse_qs(raw).items()})
        if path == "/oauth/introspect/":
            return self.introspect()
        with self.lock:
            if path == "/stub/pairs":
                return 200, {"pairs": [self.pair() for _ in range(int(json.loads(raw)["count"]))]}
            if path == "/stub/stats":
                return 200, dict(self.stats)
        return 404, {"error": "not_found"}


def make_handler(apicbase: Apicbase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Apicbase's servers do

        def setup(self) -> None:
            super().setup()
            with apicbase.lock:
                apicbase.stats["connections_opened"] += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            self._send(*apicbase.answer(self.path, raw))

        def do_GET(self) -> None:
            user_info = self.path.split("?")[0].endswith("/user_info/")
            self._send(*(apicbase.user_info() if user_info else (404, {"error": "not_found"})))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("-p", "--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Apicbase(args.client_id, args.client_secret)))
    server.daemon_threads = True
    server.request_queue_size = 64
    server.serve_forever()


if __name__ == "__main__":
    main()
