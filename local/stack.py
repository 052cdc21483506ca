"""The whole service on one machine: moto as AWS, the Apicbase sandbox (or a real Apicbase),
the unchanged handlers of template.yaml in a pool of worker processes per function (as Lambda
runs containers), the API Gateway adapter and the refresh schedule.

Used by ``python -m local.run`` (foreground, with a banner) and ``python -m local.demo``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.request import Request, urlopen

import boto3
import yaml

from local import aws as local_aws
from local import iam as local_iam
from local import template as tpl
from local.adapter import Adapter
from local.pool import STOP_SECONDS, Pool, Worker, WorkerStartError, pool_size
from local.runtime import limits
from local.sandbox_switches import Switches
from local.scheduler import RefreshSchedule
from local.streams import EventSource, StreamPoller, check_role
from local.webhook import WebhookDelivery
from local.webhook import provision as provision_webhook

HOST = "127.0.0.1"
REGION = local_aws.REGION
SANDBOX_START_SECONDS = 60
POOL_SIZE_VARIABLE = "LOCAL_POOL_SIZE"  # all functions; LOCAL_POOL_SIZE_<LogicalId> for one
EXTERNAL_APICBASE_VARS = (
    "APICBASE_AUTHORIZE_URL",
    "APICBASE_TOKEN_URL",
    "APICBASE_INTROSPECT_URL",
    "APICBASE_CLIENT_ID",
    "APICBASE_CLIENT_SECRET",
)
SCHEDULER_FUNCTION = "RefreshSchedulerFunction"
WORKER_FUNCTION = "RefreshWorkerFunction"
EVENTS_FUNCTION = "ConnectionEventsFunction"
# Template parameters the environment sets, by the name of the environment variable.
PARAMETER_SETTINGS = {
    "RefreshWindowHours": "REFRESH_WINDOW_HOURS",
    "LogLevel": "LOG_LEVEL",
    "ApicbaseApiUrl": "APICBASE_API_URL",
    "ApicbaseRateLimitPerMinute": "APICBASE_RATE_LIMIT_PER_MINUTE",
    "ApicbaseRefreshReadTimeout": "APICBASE_REFRESH_READ_TIMEOUT",
    "ApicbaseRevokeUrl": "APICBASE_REVOKE_URL",
    "BrandName": "BRAND_NAME",
    "SupportUrl": "SUPPORT_URL",
    "DefaultReturnUrl": "DEFAULT_RETURN_URL",
}
# Parameters of the callback's pages, passed on as the environment gives them.
PAGE_PARAMETERS = ("BrandName", "SupportUrl", "DefaultReturnUrl")
REQUIRED_RESOURCES = ("ConnectionsTable", "TokenKey", "ClientCredentialsSecret", "RefreshQueue", "HttpApi")


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
    sandbox_switches: Switches = field(default_factory=Switches)
    sandbox_client_id: str | None = None
    sandbox_client_secret: str | None = field(default=None, repr=False)
    external: ExternalApicbase | None = None
    template_path: Path = tpl.TEMPLATE_PATH
    # Pool sizes set by the environment, by logical id ("*": every function).
    pool_sizes: Mapping[str, int] = field(default_factory=dict)
    # The proxy's target (default: the sandbox's own API) and its budget per user and minute.
    api_url: str | None = None
    rate_limit_per_minute: int | None = None
    # How long a refresh waits for the token endpoint (short in tests that outwait it).
    refresh_read_timeout: int | None = None
    # RFC 7009 revocation for DELETE /connections/{id} (default: the sandbox's; none for another Apicbase).
    revoke_url: str | None = None
    # The integrator's name, support link and way back on the callback's pages, by parameter.
    pages: Mapping[str, str] = field(default_factory=dict)
    # The integrator's webhook for connection events (WebhookUrl, WebhookApiKey).
    webhook_url: str | None = None
    webhook_api_key: str | None = field(default=None, repr=False)

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
        template_path = Path(env.get("TEMPLATE_FILE", "").strip() or tpl.TEMPLATE_PATH)

        def parameter(name: str) -> Any:
            """A template parameter set by the environment, checked against the template's range."""
            variable = PARAMETER_SETTINGS[name]
            if not env.get(variable, "").strip():
                return None
            bounds = tpl.load(template_path)["Parameters"][name]
            return number(variable, 0, bounds.get("MinValue", -math.inf), bounds.get("MaxValue", math.inf))

        try:
            switches = Switches.from_env(env)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        webhook_url = env.get("WEBHOOK_URL", "").strip() or None
        webhook_api_key = env.get("WEBHOOK_API_KEY", "").strip() or None
        if webhook_url and not webhook_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise StartupError("WEBHOOK_URL must be an https URL (http only on 127.0.0.1 or localhost)")
        if webhook_url and not webhook_api_key:
            raise StartupError("WEBHOOK_URL needs WEBHOOK_API_KEY: the x-api-key header the webhook checks")
        pool_sizes = {
            name.removeprefix(POOL_SIZE_VARIABLE).removeprefix("_") or "*": number(name, 0, 1, 100)
            for name in env
            if name == POOL_SIZE_VARIABLE or name.startswith(POOL_SIZE_VARIABLE + "_")
        }
        return cls(
            port=number("PORT", 3000, 0, 65535),
            moto_port=number("MOTO_PORT", 5000, 0, 65535),
            sandbox_port=number("SANDBOX_PORT", 8000, 0, 65535),
            refresh_tick_seconds=number("REFRESH_TICK_SECONDS", 60.0, 0.1, 86400, float),
            refresh_window_hours=parameter("RefreshWindowHours"),
            log_level=env.get("LOG_LEVEL", "").strip().upper() or None,
            sandbox_code_lifetime=number("SANDBOX_CODE_LIFETIME", 60, 1, 3600),
            sandbox_test_hooks=env.get("SANDBOX_TEST_HOOKS", "").strip().lower() in ("1", "true", "yes"),
            sandbox_switches=switches,
            sandbox_client_id=env.get("SANDBOX_CLIENT_ID", "").strip() or None,
            sandbox_client_secret=env.get("SANDBOX_CLIENT_SECRET", "").strip() or None,
            external=external,
            template_path=template_path,
            pool_sizes={name: size for name, size in pool_sizes.items() if size},
            api_url=env.get("APICBASE_API_URL", "").strip() or None,
            rate_limit_per_minute=parameter("ApicbaseRateLimitPerMinute"),
            refresh_read_timeout=parameter("ApicbaseRefreshReadTimeout"),
            revoke_url=env.get("APICBASE_REVOKE_URL", "").strip() or None,
            pages={
                name: env[PARAMETER_SETTINGS[name]].strip()
                for name in PAGE_PARAMETERS
                if env.get(PARAMETER_SETTINGS[name], "").strip()
            },
            webhook_url=webhook_url,
            webhook_api_key=webhook_api_key,
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


class SandboxProcess:
    """``python -m local.sandbox`` as a child process; its stderr goes to ours. The client secret
    goes through its environment: a command line is public to every local user (``ps``)."""

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
            "--redirect-uri",
            redirect_uri,
            "--code-lifetime",
            str(config.sandbox_code_lifetime),
            *config.sandbox_switches.arguments(),
        ]
        if config.sandbox_test_hooks:
            command.append("--test-hooks")
        # The switches come from the command line only, so that the config decides them.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "APICBASE_"))}
        env["SANDBOX_CLIENT_SECRET"] = client_secret
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, cwd=tpl.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
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
        self.pools: dict[str, Pool] = {}
        self._spares: dict[str, Worker] = {}
        self.refs: dict[str, str] = {}
        self.adapter: Adapter | None = None
        self.sandbox: SandboxProcess | None = None
        self.moto: AtomicMoto | None = None
        self.schedule: RefreshSchedule | None = None
        self.events: StreamPoller | None = None
        self.webhook: WebhookDelivery | None = None
        self.client_id = config.sandbox_client_id or f"local-{secrets.token_hex(8)}"
        self.client_secret = config.sandbox_client_secret or secrets.token_urlsafe(32)
        self.sandbox_url: str | None = None
        self.moto_url = ""
        self._adapter_thread: threading.Thread | None = None
        # AWS calls the functions' roles refused in this run (0 expected; each one is logged).
        self.iam_refused = 0
        self._iam_lock = threading.Lock()

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
        unknown = sorted(set(config.pool_sizes) - set(functions) - {"*"})
        if unknown:
            raise StartupError(f"{POOL_SIZE_VARIABLE}_{unknown[0]}: the template has no function {unknown[0]}")
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
        # The HTTP API's workers load the SDK while AWS is provisioned; the others start cold
        # at the first tick, as on Lambda. Both keep start-up short.
        self._spares = {
            name: Worker(config.template_path, name, self._refused) for name in {route.function for route in routes}
        }
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
        self._start_pools(functions)
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
            pollers=self.pools[WORKER_FUNCTION].size,
            scheduler_function=SCHEDULER_FUNCTION,
            worker_function=WORKER_FUNCTION,
            log=log,
        )
        self.schedule.start()
        self._start_events(session, functions)

    def _start_events(self, session: Any, functions: dict[str, tpl.Function]) -> None:
        """The events function fed from the table's stream, and the webhook's delivery when set."""
        source = EventSource.of(self.template, EVENTS_FUNCTION, self.refs) if EVENTS_FUNCTION in functions else None
        if source is not None:
            # The event source reads the stream and dead-letters with the function's role, as
            # Lambda does; Lambda checks the role when it creates the mapping.
            stream_arn = self.refs["ConnectionsTable.StreamArn"]
            setup = local_iam.worker_setup(self.template, EVENTS_FUNCTION, self.refs)
            refused = [d.call.action for d in check_role(setup["statements"], stream_arn) if not d.allowed]
            if refused:
                raise StartupError(f"{EVENTS_FUNCTION}'s role cannot read the table's stream ({', '.join(refused)})")
            enforcer = local_iam.enforcer_from_setup(
                setup, lambda refusal: self._refused(refusal.function, refusal.describe())
            )
            role = self._aws_session()
            enforcer.register(role.events)
            self.events = StreamPoller(
                source=source,
                invoke=self.invoke,
                streams=role.client("dynamodbstreams"),
                sqs=role.client("sqs"),
                stream_arn=stream_arn,
                region=REGION,
                log=log,
            )
            self.events.start()
        if self.refs.get("Condition:HasWebhook") == "true" and self.config.webhook_api_key:
            webhook = provision_webhook(session, self.template, self.refs, api_key=self.config.webhook_api_key)
            self.webhook = WebhookDelivery(
                webhook, sqs=session.client("sqs"), region=REGION, stack_name=self.refs["AWS::StackName"], log=log
            )
            self.webhook.start()

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
        # Never the template's default, Apicbase's production endpoint, for tokens another server issued:
        # the sandbox's, or for another Apicbase only what APICBASE_REVOKE_URL names (else none).
        sandbox_revoke_url = f"{self.sandbox_url}/oauth/revoke_token/" if external is None else ""
        parameters["ApicbaseRevokeUrl"] = self.config.revoke_url or sandbox_revoke_url
        parameters.update(self.config.pages)
        if self.config.refresh_window_hours is not None:
            parameters["RefreshWindowHours"] = str(self.config.refresh_window_hours)
        if self.config.log_level:
            parameters["LogLevel"] = self.config.log_level
        # The proxy forwards to the sandbox's protected API unless told otherwise.
        api_url = self.config.api_url or (f"{self.sandbox_url}/" if external is None else None)
        if api_url:
            parameters["ApicbaseApiUrl"] = api_url
        if self.config.rate_limit_per_minute is not None:
            parameters["ApicbaseRateLimitPerMinute"] = str(self.config.rate_limit_per_minute)
        if self.config.refresh_read_timeout is not None:
            parameters["ApicbaseRefreshReadTimeout"] = str(self.config.refresh_read_timeout)
        if self.config.webhook_url and self.config.webhook_api_key:
            parameters["WebhookUrl"] = self.config.webhook_url
            parameters["WebhookApiKey"] = self.config.webhook_api_key
        return parameters

    def _start_aws(self) -> None:
        # werkzeug would log every AWS call of the handlers.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto = AtomicMoto(HOST, self.config.moto_port)
        moto.start()
        self.moto = moto
        self.moto_url = moto.url
        # This process's boto3 (provisioning, the queue poller) and the workers' read these: every
        # AWS call goes to moto, with credentials that are not anyone's (a profile or session
        # token would be someone's).
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(self._aws_environment())

    def _aws_environment(self) -> dict[str, str]:
        return {
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

    @staticmethod
    def _aws_session() -> Any:
        return boto3.session.Session(region_name=REGION)

    def _start_pools(self, functions: dict[str, tpl.Function]) -> None:
        """A pool per function; those with a spare worker warm it now, side by side, and a
        handler that cannot start is a StartupError that says why."""
        for fn in functions.values():
            env = {**self._aws_environment(), **local_aws.function_environment(self.template, fn.logical_id, self.refs)}
            size = pool_size(self.template, fn, self.refs, self.config.pool_sizes)
            self.pools[fn.logical_id] = Pool(
                fn.logical_id,
                self.config.template_path,
                env,
                size=size,
                timeout=limits(self.template, fn)[0],
                spare=self._spares.pop(fn.logical_id, None),
                iam=local_iam.worker_setup(self.template, fn.logical_id, self.refs),
                on_refusal=self._refused,
            )
        warm = [name for name, pool in self.pools.items() if pool.processes]
        with ThreadPoolExecutor(max(1, len(warm))) as starting:
            warming = {name: starting.submit(self.pools[name].warm) for name in warm}
        for name, started in warming.items():
            try:
                started.result()
            except WorkerStartError as exc:
                raise StartupError(f"{name}: {exc}") from None

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return self.pools[logical_id].invoke(event)

    def _refused(self, function: str, description: str) -> None:
        """An AWS call a function's role did not allow: it failed in the function as in AWS."""
        with self._iam_lock:
            self.iam_refused += 1
            count = self.iam_refused
        log(f"IAM refused {description} [refused in this run: {count}]")

    def stop(self) -> None:
        """Stop what was started (all of it, or what a failed start got to), once."""
        schedule, sandbox, adapter, moto = self.schedule, self.sandbox, self.adapter, self.moto
        events, webhook = self.events, self.webhook
        pools = list(self.pools.values())
        spares = list(self._spares.values())
        self.schedule = self.sandbox = self.moto = self.events = self.webhook = None
        self.pools, self._spares = {}, {}
        # Everything is told to stop first and waited for after, so the waits overlap; moto
        # goes last, since the handlers may still be calling it.
        if schedule is not None:
            schedule.stop(wait=False)
        for loop in (events, webhook):
            if loop is not None:
                loop.stop(wait=False)
        if sandbox is not None:
            sandbox.terminate()
        for pool in pools:
            pool.close()
        for spare in spares:  # a start that failed before the pools existed
            spare.kill()
        if adapter is not None and self._adapter_thread is not None:
            adapter.shutdown()
            self._adapter_thread = None
        if adapter is not None:
            adapter.server_close()
        deadline = time.monotonic() + STOP_SECONDS
        for pool in pools:
            pool.join(deadline)
        if schedule is not None:
            schedule.stop()
        for loop in (events, webhook):
            if loop is not None:
                loop.stop()
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


class AtomicMoto:
    """moto's server, one DynamoDB request at a time: moto checks a condition and writes in
    separate steps, and concurrent workers must meet DynamoDB's atomic conditional writes. (Not
    every request: an SQS long poll would hold the others up.)"""

    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 (slow: only once the checks passed)
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server  # noqa: PLC0415

        moto = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def atomic(environ: dict[str, Any], start_response: Any) -> Any:
            if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
                return moto(environ, start_response)
            with lock:
                return list(moto(environ, start_response))

        self._server = make_server(host, port, atomic, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def request_json(url: str, method: str = "GET", body: Any = None) -> Any:
    """A small JSON call with the standard library (the stack itself needs no HTTP client)."""
    data = json.dumps(body).encode() if body is not None else None
    request = Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    with urlopen(request, timeout=30) as response:  # noqa: S310 (our own loopback URL)
        raw = response.read()
    return json.loads(raw) if raw else None
