"""A tiny webhook on 127.0.0.1: records every POST it receives (headers, JSON body, arrival) and
answers 200, as an integrator's endpoint would."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "e2e-webhook-" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    event: dict[str, Any]
    arrived: float  # time.monotonic()


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, json.loads(body), time.monotonic())
                with receiver._arrived:
                    receiver.deliveries.append(delivery)
                    receiver._arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/apicbase-events"

    def of(self, detail_type: str, connection_id: str) -> list[Delivery]:
        with self._arrived:
            return [
                d
                for d in self.deliveries
                if d.event.get("detail-type") == detail_type and d.event["detail"].get("connection_id") == connection_id
            ]

    def wait_for(self, detail_type: str, connection_id: str, *, within: float) -> Delivery:
        """The first delivery of that event, waiting up to ``within`` seconds for it."""
        deadline = time.monotonic() + within
        with self._arrived:
            while not self.of(detail_type, connection_id):
                if not self._arrived.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    raise AssertionError(f"no {detail_type!r} for {connection_id} within {within} s")
            return self.of(detail_type, connection_id)[0]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
