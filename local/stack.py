"""The whole service on one machine: moto as AWS, the Apicbase sandbox (or a real Apicbase),
the unchanged handlers of template.yaml, the API Gateway adapter and the refresh schedule.

Used by ``python -m local.run`` (foreground, with a banner) and ``python -m local.demo``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any
from urllib.request import Request, urlopen

import boto3
import yaml

from local import aws as local_aws
from local import template as tpl
from local.adapter import Adapter
from local.lambda_context import LambdaContext
from local.scheduler import RefreshSchedule

HOST = "127.0.0.1"
REGION = local_aws.REGION
LAYER_PATH = tpl.ROOT / "layers" / "apicbase_oauth"
SANDBOX_START_SECONDS = 60
EXTERNAL_APICBASE_VARS = (
    "APICBASE_AUTHORIZE_URL",
    "APICBASE_TOKEN_URL",
    "APICBASE_INTROSPECT_URL",
    "APICBASE_CLIENT_ID",
    "APICBASE_CLIENT_SECRET",
)
SCHEDULER_FUNCTION = "RefreshSchedulerFunction"
WORKER_FUNCTION = "RefreshWorkerFunction"
# Template parameters the environment sets, by the name of the environment variable.
PARAMETER_SETTINGS = {"RefreshWindowHours": "REFRESH_WINDOW_HOURS", "LogLevel": "LOG_LEVEL"}
REQUIRED_RESOURCES = ("ConnectionsTable", "TokenKey", "ClientCredentialsSecret", "RefreshQueue", "HttpApi")
# The handlers share Powertools' logger and metrics (one layer) and keep the current request on
# their resolver: like a Lambda container, a handler runs one event at a time, so every
# invocation takes this lock.
INVOKE_LOCK = threading.Lock()


class StartupError(Exception):
    """Something the person starting the stack can fix; its text is one line that says what."""


def log(line: str) -> None:
    print(f"local: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ExternalApicbase:
    authorize_url: str
    token_url: str
    introspect_url: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class Config:
    """What the environment asks for; 0 as a port means any free port."""

    port: int = 3000
    moto_port: int = 5000
    sandbox_port: int = 8000
    refresh_tick_seconds: float = 60.0
    refresh_window_hours: int | None = None
    log_level: str | None = None
    sandbox_code_lifetime: int = 60
    sandbox_test_hooks: bool = False
    sandbox_client_id: str | None = None
    sandbox_client_secret: str | None = field(default=None, repr=False)
    external: ExternalApicbase | None = None
    template_path: Path = tpl.TEMPLATE_PATH

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env

        def number(name: str, default: float, low: float, high: float, kind: type = int) -> Any:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise StartupError(f"{name} must be a number, not {raw[:20]!r}") from None
            if not low <= value <= high:
                raise StartupError(f"{name} must be between {low:g} and {high:g}")
            return value

        given = [name for name in EXTERNAL_APICBASE_VARS if env.get(name, "").strip()]
        external = None
        if given:
            missing = [name for name in EXTERNAL_APICBASE_VARS if name not in given]
            if missing:
                raise StartupError(f"to use another Apicbase, also set {', '.join(missing)}")
            external = ExternalApicbase(*(env[name].strip() for name in EXTERNAL_APICBASE_VARS))
        window = env.get("REFRESH_WINDOW_HOURS", "").strip()
        return cls(
            port=number("PORT", 3000, 0, 65535),
            moto_port=number("MOTO_PORT", 5000, 0, 65535),
            sandbox_port=number("SANDBOX_PORT", 8000, 0, 65535),
            refresh_tick_seconds=number("REFRESH_TICK_SECONDS", 60.0, 0.1, 86400, float),
            refresh_window_hours=number("REFRESH_WINDOW_HOURS", 48, 1, 160) if window else None,
            log_level=env.get("LOG_LEVEL", "").strip().upper() or None,
            sandbox_code_lifetime=number("SANDBOX_CODE_LIFETIME", 60, 1, 3600),
            sandbox_test_hooks=env.get("SANDBOX_TEST_HOOKS", "").strip().lower() in ("1", "true", "yes"),
            sandbox_client_id=env.get("SANDBOX_CLIENT_ID", "").strip() or None,
            sandbox_client_secret=env.get("SANDBOX_CLIENT_SECRET", "").strip() or None,
            external=external,
            template_path=Path(env.get("TEMPLATE_FILE", "").strip() or tpl.TEMPLATE_PATH),
        )


def load_template(path: Path) -> tuple[dict[str, Any], dict[str, tpl.Function], list[tpl.Route]]:
    """The template, its functions and routes, or a StartupError saying what is wrong with it."""
    name = path.name
    try:
        template = tpl.load(path)
        resources = template["Resources"]
        missing = [r for r in REQUIRED_RESOURCES if r not in resources]
        if missing:
            raise StartupError(f"{name} has no {', '.join(missing)} resource")
        functions = tpl.functions(template)
        routes = tpl.http_routes(template)
    except FileNotFoundError:
        raise StartupError(f"{path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise StartupError(f"{name} is not valid YAML{where}: {problem}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise StartupError(f"{name} is not a template this stack can run: {type(exc).__name__} {exc}") from None
    for needed in (SCHEDULER_FUNCTION, WORKER_FUNCTION):
        if needed not in functions:
            raise StartupError(f"{name} has no {needed}")
    for fn in functions.values():
        if not fn.module_path.is_file():
            raise StartupError(f"{name}: {fn.logical_id}'s handler {fn.module_path.relative_to(tpl.ROOT)} is missing")
    if not routes:
        raise StartupError(f"{name} has no HttpApi routes")
    return template, functions, routes


def check_parameters(template: dict[str, Any], parameters: Mapping[str, str]) -> None:
    """The template's own constraints on the parameters set from the environment (not its
    https-only URL patterns: the sandbox is plain http on loopback, which the code allows)."""
    for parameter, value in parameters.items():
        spec = template.get("Parameters", {}).get(parameter, {})
        name = PARAMETER_SETTINGS.get(parameter, parameter)
        allowed = spec.get("AllowedValues")
        if allowed and value not in map(str, allowed):
            raise StartupError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value[:20]!r}")
        low, high = spec.get("MinValue"), spec.get("MaxValue")
        if (low is not None and float(value) < low) or (high is not None and float(value) > high):
            raise StartupError(f"{name} must be between {low} and {high}")


def ensure_port_free(port: int, variable: str) -> None:
    """Fail early, in one line, rather than in a server thread (moto's would hang on it)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
        try:
            probe.bind((HOST, port))
        except OSError:
            raise StartupError(f"port {port} on {HOST} is already in use: set {variable} to another port") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class LoadedFunction:
    logical_id: str
    module: ModuleType
    handler: Callable[[dict[str, Any], Any], Any]
    timeout: int
    memory: int

    def invoke(self, event: dict[str, Any]) -> Any:
        with INVOKE_LOCK:
            return self.handler(event, LambdaContext(self.logical_id, self.memory, self.timeout))


def _import_handler(fn: tpl.Function, template: dict[str, Any]) -> LoadedFunction:
    module = fn.import_module(f"local_lambda_{fn.logical_id}")
    globals_ = template.get("Globals", {}).get("Function", {})
    return LoadedFunction(
        logical_id=fn.logical_id,
        module=module,
        handler=getattr(module, fn.handler_name),
        timeout=int(fn.properties.get("Timeout", globals_.get("Timeout", 3))),
        memory=int(fn.properties.get("MemorySize", globals_.get("MemorySize", 128))),
    )


class SandboxProcess:
    """``python -m local.sandbox`` as a child process; its stderr goes to ours."""

    def __init__(self, port: int, client_id: str, client_secret: str, redirect_uri: str, config: Config) -> None:
        command = [
            sys.executable,
            "-m",
            "local.sandbox",
            "--host",
            HOST,
            "--port",
            str(port),
            "--client-id",
            client_id,
            "--client-secret",
            client_secret,
            "--redirect-uri",
            redirect_uri,
            "--code-lifetime",
            str(config.sandbox_code_lifetime),
        ]
        if config.sandbox_test_hooks:
            command.append("--test-hooks")
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, cwd=tpl.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._stderr_tail: list[str] = []
        self._ready = threading.Event()
        assert self.process.stdout and self.process.stderr
        threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True).start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("sandbox listening on "):
                self._ready.set()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr_tail = [*self._stderr_tail[-4:], line.rstrip()]
            if self._ready.is_set():
                print(line, end="", file=sys.stderr, flush=True)

    def wait_ready(self, variable: str) -> None:
        deadline = time.monotonic() + SANDBOX_START_SECONDS
        while not self._ready.wait(0.05):
            code = self.process.poll()
            if code is not None:
                time.sleep(0.1)  # let the reader catch the last line
                last = self._stderr_tail[-1] if self._stderr_tail else f"exit code {code}"
                hint = f" (set {variable} to another port)" if "listen" in last else ""
                raise StartupError(f"the Apicbase sandbox did not start: {last}{hint}")
            if time.monotonic() > deadline:
                raise StartupError(f"the Apicbase sandbox did not start within {SANDBOX_START_SECONDS} s")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Stack:
    """Start with ``start()``, stop with ``stop()`` (safe to call after a failed start)."""

    def __init__(self, config: Config, *, log_requests: bool = True) -> None:
        self.config = config
        self.log_requests = log_requests
        self.template: dict[str, Any] = {}
        self.functions: dict[str, LoadedFunction] = {}
        self.refs: dict[str, str] = {}
        self.adapter: Adapter | None = None
        self.sandbox: SandboxProcess | None = None
        self.moto: Any = None
        self.schedule: RefreshSchedule | None = None
        self.client_id = config.sandbox_client_id or f"local-{secrets.token_hex(8)}"
        self.client_secret = config.sandbox_client_secret or secrets.token_urlsafe(32)
        self.sandbox_url: str | None = None
        self.moto_url = ""
        self._adapter_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.adapter is not None
        return self.adapter.url

    @property
    def callback_url(self) -> str:
        return f"{self.url}/oauth/callback"

    def start(self) -> None:
        config = self.config
        self.template, functions, routes = load_template(config.template_path)
        ensure_port_free(config.moto_port, "MOTO_PORT")
        sandbox_port = None
        if config.external is None:
            ensure_port_free(config.sandbox_port, "SANDBOX_PORT")
            sandbox_port = config.sandbox_port or free_port()
            self.sandbox_url = f"http://{HOST}:{sandbox_port}"
        try:
            self.adapter = Adapter(HOST, config.port, routes, self.invoke, log, log_requests=self.log_requests)
        except OSError:
            raise StartupError(f"port {config.port} on {HOST} is already in use: set PORT to another port") from None
        parameters = self._parameters()
        check_parameters(self.template, parameters)
        # The sandbox (Django) takes the longest to start: it boots while AWS is provisioned.
        if sandbox_port is not None:
            self.sandbox = SandboxProcess(sandbox_port, self.client_id, self.client_secret, self.callback_url, config)
        self._start_aws()
        session = self._aws_session()
        self.refs = local_aws.provision(
            session,
            self.template,
            applications={"default": self._application()},
            parameters=parameters,
        )
        self._load_functions(functions)
        if self.sandbox is not None:
            self.sandbox.wait_ready("SANDBOX_PORT")
        self._adapter_thread = threading.Thread(target=self.adapter.serve_forever, name="adapter", daemon=True)
        self._adapter_thread.start()
        worker_event = next(e for e in functions[WORKER_FUNCTION].events.values() if e["Type"] == "SQS")
        self.schedule = RefreshSchedule(
            invoke=self.invoke,
            sqs=session.client("sqs"),
            queue_url=self.refs["RefreshQueue"],
            region=REGION,
            tick_seconds=config.refresh_tick_seconds,
            batch_size=int(worker_event["Properties"].get("BatchSize", 10)),
            scheduler_function=SCHEDULER_FUNCTION,
            worker_function=WORKER_FUNCTION,
            log=log,
        )
        self.schedule.start()

    def _application(self) -> dict[str, str]:
        external = self.config.external
        if external is not None:
            return {"client_id": external.client_id, "client_secret": external.client_secret}
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def _parameters(self) -> dict[str, str]:
        external = self.config.external
        if external is not None:
            urls = (external.authorize_url, external.token_url, external.introspect_url)
        else:
            base = self.sandbox_url
            urls = (f"{base}/oauth/authorize/", f"{base}/oauth/token/", f"{base}/oauth/introspect/")
        parameters = dict(zip(("ApicbaseAuthorizeUrl", "ApicbaseTokenUrl", "ApicbaseIntrospectUrl"), urls, strict=True))
        parameters["CallbackUrlOverride"] = self.callback_url
        if external is None:
            # Never Apicbase's own revocation endpoint (the template's default) for sandbox tokens.
            # Empty (not configured) until the sandbox serves /oauth/revoke_token/; then its URL.
            parameters["ApicbaseRevokeUrl"] = ""
        if self.config.refresh_window_hours is not None:
            parameters["RefreshWindowHours"] = str(self.config.refresh_window_hours)
        if self.config.log_level:
            parameters["LogLevel"] = self.config.log_level
        return parameters

    def _start_aws(self) -> None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 (slow: only once the checks passed)

        # werkzeug would log every AWS call of the handlers, and Powertools warns on every
        # invocation that adds no metric (metrics are off here anyway).
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
        moto = ThreadedMotoServer(ip_address=HOST, port=self.config.moto_port, verbose=False)
        moto.start()
        self.moto = moto
        host, port = moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        # The handlers' unchanged boto3 clients read these: every AWS call goes to moto, with
        # credentials that are not anyone's (a profile or session token would be someone's).
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                # No CloudWatch here: EMF metric blobs on stdout would drown the logs.
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )

    @staticmethod
    def _aws_session() -> Any:
        return boto3.session.Session(region_name=REGION)

    def _load_functions(self, functions: dict[str, tpl.Function]) -> None:
        if str(LAYER_PATH) not in sys.path:
            sys.path.insert(0, str(LAYER_PATH))  # what the BrokerLayer puts on Lambda's path
        from apicbase_oauth.errors import ConfigurationError  # noqa: PLC0415 (the layer is on the path now)

        for fn in functions.values():
            # Each handler builds its Deps from os.environ at import, so its own environment is
            # set first. The functions' variables have the same names and values except the
            # scheduler's REFRESH_QUEUE_URL and REFRESH_WINDOW_HOURS, so the process keeps
            # the union afterwards (read only at import, they change nothing for the others).
            os.environ.update(local_aws.function_environment(self.template, fn.logical_id, self.refs))
            try:
                self.functions[fn.logical_id] = _import_handler(fn, self.template)
            except ConfigurationError as exc:
                raise StartupError(f"{fn.logical_id}: {exc.message}") from None

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return self.functions[logical_id].invoke(event)

    def stop(self) -> None:
        """Stop what was started (all of it, or what a failed start got to), once."""
        schedule, sandbox, adapter, moto = self.schedule, self.sandbox, self.adapter, self.moto
        self.schedule = self.sandbox = self.moto = None
        # Everything is told to stop first and waited for after, so the waits overlap; moto
        # goes last, since the handlers may still be calling it.
        if schedule is not None:
            schedule.stop(wait=False)
        if sandbox is not None:
            sandbox.terminate()
        if adapter is not None and self._adapter_thread is not None:
            adapter.shutdown()
            self._adapter_thread = None
        if adapter is not None:
            adapter.server_close()
        if schedule is not None:
            schedule.stop()
        if sandbox is not None:
            sandbox.stop()
        if moto is not None:
            moto.stop()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connect_session(self, connection_id: str) -> dict[str, Any]:
        """Start a connect session through the adapter, as an integrator's backend would."""
        return request_json(f"{self.url}/connect-sessions", "POST", {"connection_id": connection_id})


def request_json(url: str, method: str = "GET", body: Any = None) -> Any:
    """A small JSON call with the standard library (the stack itself needs no HTTP client)."""
    data = json.dumps(body).encode() if body is not None else None
    request = Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    with urlopen(request, timeout=30) as response:  # noqa: S310 (our own loopback URL)
        raw = response.read()
    return json.loads(raw) if raw else None
