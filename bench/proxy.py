"""python -m bench.proxy: what the proxy route costs per warm call, against calling Apicbase directly.

Apicbase is a small HTTP stub and AWS is moto's server, each in its own process, so this
process's CPU time is the caller's (direct) or the broker's (proxied) alone, AWS clients'
serialising, signing, HTTP and parsing included; every AWS call of the warm path is counted.
The proxied call runs the real ConnectionsFunction handler on an API Gateway event, Powertools
logging included (to /dev/null).

Figures are this machine's CPU at full speed; Lambda gives the function a share of a vCPU by
memory (512 MB: about 0.3 vCPU), so multiply the CPU figures by roughly 3 for its wall clock.

    python -m bench.proxy [--calls 300]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "apicbase_oauth"))

REGION = "eu-west-1"
CONNECTION_ID = "lib-bench"
ACCESS_TOKEN = "bench-access-token-0123456789"
REFRESH_TOKEN = "bench-refresh-token-0123456789"
ROUTE_KEY = "ANY /connections/{connection_id}/apicbase/{proxy+}"
API_PATH = "api/v2/products/"
ANSWER = json.dumps({"results": [{"id": i, "name": f"Product {i}", "unit": "kg"} for i in range(40)]}).encode()


# --- Apicbase, in its own process --------------------------------------------------------------------
class _Apicbase(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: else a delayed ACK adds 40 ms to every kept-alive call.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        live = self.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}"
        self._send(200, ANSWER) if live else self._send(401, b'{"detail": "invalid token"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(200, json.dumps({"active": True, "username": "chef@example.com", "scope": "library"}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Apicbase).serve_forever()


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- AWS: moto's server in its own process -------------------------------------------------------------
class CountingCalls:
    """A ``before-call`` listener: how many calls of each AWS operation the clients make."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.endpoint_prefix}:{model.name}"] += 1


def _event(method: str = "GET") -> dict[str, Any]:
    raw_path = f"/connections/{CONNECTION_ID}/apicbase/{API_PATH}"
    return {
        "version": "2.0",
        "routeKey": ROUTE_KEY,
        "rawPath": raw_path,
        "rawQueryString": "page=1",
        "headers": {"accept": "application/json", "host": "abc.execute-api.eu-west-1.amazonaws.com"},
        "requestContext": {
            "http": {"method": method, "path": raw_path},
            "routeKey": ROUTE_KEY,
            "requestId": "bench",
            "authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:role/bench"}},
        },
        "isBase64Encoded": False,
    }


class AwsClock:
    """CPU time spent inside AWS calls: botocore's ``_make_api_call`` (serialise, sign, HTTP,
    parse, boto3's DynamoDB types). ``replaying`` answers each operation with its last real
    answer instead, so that the proxy runs its own code and Apicbase's HTTP call only."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.answers: dict[str, Any] = {}

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        def timed(original: Callable[..., Any], client: Any, operation: str, params: Any) -> Any:
            started = time.process_time()
            try:
                self.answers[operation] = answer = original(client, operation, params)
                return answer
            finally:
                self.seconds += time.process_time() - started

        with _patched_api_call(timed):
            yield

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        with _patched_api_call(lambda original, client, operation, params: copy.deepcopy(self.answers[operation])):
            yield


@contextlib.contextmanager
def _patched_api_call(call: Callable[..., Any]) -> Iterator[None]:
    import botocore.client  # noqa: PLC0415

    original = botocore.client.BaseClient._make_api_call
    botocore.client.BaseClient._make_api_call = (  # type: ignore[method-assign]
        lambda client, operation, params: call(original, client, operation, params)
    )
    try:
        yield
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]


def _per_call(calls: int, run: Callable[[], Any]) -> tuple[float, float]:
    """CPU and wall milliseconds per call, the medians of five rounds."""
    cpu, wall = [], []
    rounds = 5
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(calls // rounds):
            run()
        cpu.append((time.process_time() - c0) * 1000 / (calls // rounds))
        wall.append((time.perf_counter() - w0) * 1000 / (calls // rounds))
    return statistics.median(cpu), statistics.median(wall)


def measure(calls: int) -> dict[str, Any]:
    import boto3  # noqa: PLC0415
    import requests  # noqa: PLC0415
    from local import aws as local_aws  # noqa: PLC0415
    from local import template as tpl  # noqa: PLC0415
    from local.lambda_context import LambdaContext  # noqa: PLC0415

    from apicbase_oauth import connect, proxy  # noqa: PLC0415
    from apicbase_oauth import deps as deps_module  # noqa: PLC0415
    from apicbase_oauth.config import Settings  # noqa: PLC0415

    port, moto_port = _free_port(), _free_port()
    stub = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    stub.start()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api, moto_url = f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{moto_port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        os.environ[name] = value
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    template = tpl.load()
    context = LambdaContext("ConnectionsFunction", 512, 60)
    try:
        _wait_for(api, requests)
        _wait_for(moto_url, requests)
        counting = CountingCalls()
        session = boto3.session.Session(region_name=REGION)
        session.events.register("before-call", counting)  # before any client is built: clients copy it
        refs = local_aws.provision(
            session,
            template,
            applications={"default": {"client_id": "bench", "client_secret": "bench-secret"}},
            parameters={
                "ApicbaseApiUrl": api,
                "ApicbaseTokenUrl": f"{api}oauth/token/",
                "ApicbaseIntrospectUrl": f"{api}oauth/introspect/",
                "ApicbaseAuthorizeUrl": f"{api}oauth/authorize/",
                "CallbackUrlOverride": "https://broker.example.com/oauth/callback",
                # Every call still writes the budget; only the limit is out of the way.
                "ApicbaseRateLimitPerMinute": "100000",
            },
        )
        env = local_aws.function_environment(template, "ConnectionsFunction", refs)
        os.environ.update(env)
        module = tpl.functions(template)["ConnectionsFunction"].import_module("bench_proxy_connections")
        deps = deps_module.build(Settings.from_env(env), session=session)
        module.DEPS, module.PROXY = deps, proxy.build(deps)

        def proxied() -> None:
            answer = module.lambda_handler(_event(), context)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"the proxy answered {answer['statusCode']}")

        http = requests.Session()
        headers = {"Authorization": f"Bearer {ACCESS_TOKEN}", "Accept": "application/json"}

        def direct() -> None:
            answer = http.get(f"{api}{API_PATH}?page=1", headers=headers, timeout=10)
            if answer.status_code != 200:
                raise RuntimeError(f"Apicbase's stub answered {answer.status_code}")

        with _quiet():
            connect.import_tokens(
                deps, CONNECTION_ID, access_token=ACCESS_TOKEN, refresh_token=REFRESH_TOKEN, expires_in=604800
            )
            for _ in range(30):  # warm: clients, pools, caches
                proxied()
                direct()
            counting.calls.clear()
            aws = AwsClock()
            with aws.measuring():
                proxy_cpu, proxy_wall = _per_call(calls, proxied)
            aws_calls = dict(counting.calls)
            direct_cpu, direct_wall = _per_call(calls, direct)
            with aws.replaying():
                replayed_cpu, _ = _per_call(calls, proxied)
                direct_again, _ = _per_call(calls, direct)
        measured = (calls // 5) * 5
        return {
            "calls": measured,
            "direct_cpu_ms": direct_cpu,
            "direct_wall_ms": direct_wall,
            "proxy_cpu_ms": proxy_cpu,
            "proxy_wall_ms": proxy_wall,
            "aws_cpu_ms": aws.seconds * 1000 / measured,
            # The proxy with its AWS calls answered from memory, against the direct call measured beside it.
            "own_cpu_ms": replayed_cpu - direct_again,
            "aws_calls_per_call": {name: count / measured for name, count in sorted(aws_calls.items())},
        }

    finally:
        stub.terminate()
        moto.terminate()
        stub.join(5)
        moto.wait(10)


def own_code_ms(figures: dict[str, Any]) -> float:
    """The proxy's CPU per call beyond calling Apicbase directly and beyond its AWS calls."""
    return float(figures["own_cpu_ms"])


def subtracted_ms(figures: dict[str, Any]) -> float:
    """The same by subtraction in the real run: it also carries the cost the AWS calls leave behind
    (a CPU's caches refilled after botocore's work), so it reads higher and varies more."""
    return float(figures["proxy_cpu_ms"] - figures["direct_cpu_ms"] - figures["aws_cpu_ms"])


def _wait_for(url: str, requests: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # A server still starting on a loaded machine may accept and answer late.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            requests.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


@contextlib.contextmanager
def _quiet() -> Any:
    """Powertools logs to stdout: to /dev/null while measuring (its CPU still counts)."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        from apicbase_oauth.observability import logger  # noqa: PLC0415

        handler = logger.registered_handler
        previous = handler.setStream(null)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            handler.setStream(previous)  # type: ignore[attr-defined]


def _line(label: str, cpu: float, wall: float) -> str:
    return f"  {label:<20} CPU {cpu:.2f} ms/call   wall {wall:.2f} ms/call"


def report(figures: dict[str, Any]) -> str:
    aws = figures["aws_calls_per_call"]
    kms = sum(count for name, count in aws.items() if name.startswith("kms:"))
    lines = [
        f"proxy overhead per warm call ({figures['calls']} calls, medians of 5 rounds; Apicbase a stub in its own "
        "process, AWS moto's server in another)",
        _line("direct to Apicbase:", figures["direct_cpu_ms"], figures["direct_wall_ms"]),
        _line("through the proxy:", figures["proxy_cpu_ms"], figures["proxy_wall_ms"]),
        f"  overhead:            CPU +{figures['proxy_cpu_ms'] - figures['direct_cpu_ms']:.2f} ms/call, the AWS "
        "clients' share included (wall here is moto's latency; on AWS add API Gateway and 2-3 round trips)",
        "  AWS calls per call:  " + ", ".join(f"{name} {count:g}" for name, count in aws.items()),
        f"  in the AWS calls:    CPU {figures['aws_cpu_ms']:.2f} ms/call (measured inside botocore: serialise, sign, "
        f"HTTP, parse); what is left: {subtracted_ms(figures):.2f} ms/call",
        f"  the proxy's own code: CPU {own_code_ms(figures):.2f} ms/call (its AWS calls answered from memory, "
        "against the direct call beside it)",
        f"  KMS calls per call:  {kms:g}"
        + (" (get_token decrypts with KMS on every read today; the data-key cache makes it 0)" if kms else ""),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per variant (default 300)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(max(args.calls, 5))
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
