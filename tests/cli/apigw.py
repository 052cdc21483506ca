"""The local run's API Gateway stand-in (local/adapter.py) in this process, in front of handler
modules loaded with moto and the fake Apicbase, so the CLI talks HTTP to the real handlers."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from local import template as tpl
from local.adapter import Adapter


@dataclass
class Served:
    url: str
    # What the handlers printed (logs, EMF metrics), kept apart from the CLI's own stdout.
    logs: io.StringIO = field(default_factory=io.StringIO)


@contextmanager
def serve(template: dict[str, Any], handlers: dict[str, ModuleType], context: Any) -> Iterator[Served]:
    """Serve the routes of the functions in ``handlers`` (logical id -> module) on 127.0.0.1."""
    served = Served(url="")

    def invoke(function: str, event: dict[str, Any]) -> Any:
        # The client waits for this answer, so nothing else prints meanwhile.
        with redirect_stdout(served.logs):
            return handlers[function].lambda_handler(event, context)

    routes = [r for r in tpl.http_routes(template) if r.function in handlers]
    server = Adapter("127.0.0.1", 0, routes, invoke, served.logs.write, log_requests=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = server.url
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
