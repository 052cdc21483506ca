"""Fixtures for the hostile-input and fault suites.

- ``watch`` (autouse): every test here runs with all log output captured (the Powertools
  Logger's JSON lines, stdout/stderr, the standard logging records) and every secret the fake
  Apicbase issued, every state and the client secrets collected; at teardown none may appear in
  any captured text. Tests add what else they see (response bodies, exception messages).
- ``handlers``: the real Lambda handler modules, on moto, with the test clock.
- ``http_event``: an API Gateway HTTP API payload-2.0 event, built like API Gateway does
  (repeated query keys joined with commas).
- ``FIGURES``: counts (examples tried, faults injected, secrets checked) printed at the end of
  the run; SECURITY.md quotes them.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from local.lambda_context import LambdaContext

from apicbase_oauth import deps as deps_module
from apicbase_oauth import signin
from apicbase_oauth.adapters.dynamodb import CONNECTIONS_INDEX
from apicbase_oauth.config import Settings
from apicbase_oauth.model import TokenPair
from apicbase_oauth.observability import logger as broker_logger
from tests import fakes
from tests.conftest import load_event
from tests.hostile.strategies import ATTACKS
from tests.unit.refresh_support import seed as seed_connection  # noqa: F401 (shared with the unit tests)

FIGURES: Counter[str] = Counter()
MIN_SECRET_LENGTH = 8
# The form fields that carry a credential to Apicbase.
PRESENTED = ("code", "refresh_token", "token", "code_verifier")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("hostile-input figures")
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")


# --- secrets stay secret --------------------------------------------------------------------------
class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@cache
def _source_text() -> str:
    """The product's own Python source (not the tests': their planted values stay secrets).
    Hypothesis draws strings from the constants of the code under test ("us-east-1", a function
    name, a log message), which then appear in ordinary output: such a value is no leak."""
    root = Path(__file__).resolve().parents[2]
    folders = ("layers", "functions", "local", "cli")
    return "\n".join(path.read_text() for folder in folders for path in sorted((root / folder).rglob("*.py")))


@dataclass
class SecretWatch:
    """What must never be seen, and everything that was seen."""

    secrets: set[str] = field(default_factory=set)
    texts: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)  # the broker's JSON log lines, as emitted

    def secret(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v)

    def secret_input(self, *values: Any) -> int:
        """Register what a test sends as a code, a state or a token, when it could be one: a
        string of 8 or more characters, 4 or more of them distinct, that is not one of the attack
        strings (which a page may show escaped, or a log name as an error code), nor written in the
        project's source (a constant Hypothesis drew from the code). Shorter or
        plainer values would match ordinary text; a real code or state is 30 to 43 random
        characters. Returns how many were registered."""
        plausible = [
            v
            for v in values
            if isinstance(v, str)
            and len(v) >= MIN_SECRET_LENGTH
            and len(set(v)) >= 4
            and v not in ATTACKS
            and v not in _source_text()
        ]
        self.secret(*plausible)
        FIGURES["secrets: generated inputs registered (codes, states, tokens)"] += len(plausible)
        return len(plausible)

    def see(self, *texts: Any) -> None:
        self.texts.extend(str(t) for t in texts if t is not None)

    def leaks(self, texts: list[str]) -> list[tuple[str, str]]:
        return [(s[:8] + "…", t[:200]) for t in texts for s in self.secrets if s in t]


class _RecordingSecrets:
    """Stands in for the ``secrets`` module in use cases: every state and verifier is a secret."""

    def __init__(self, watch: SecretWatch) -> None:
        self.watch = watch

    def token_urlsafe(self, nbytes: int) -> str:
        import secrets  # noqa: PLC0415 (the real module, not this stand-in)

        value = secrets.token_urlsafe(nbytes)
        self.watch.secret(value)
        return value


@pytest.fixture(autouse=True)
def watch(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SecretWatch]:
    """Given all log output captured at DEBUG, then no secret appears in it (checked at teardown)."""
    found = SecretWatch()
    found.secret(*(app["client_secret"] for app in fakes.APPLICATIONS.values()))
    monkeypatch.setattr(signin, "secrets", _RecordingSecrets(found))
    lines = _Lines(broker_logger.registered_formatter)
    found.log_lines = lines.lines
    broker_logger.addHandler(lines)
    level = broker_logger.log_level
    broker_logger.setLevel(logging.DEBUG)
    try:
        yield found
    finally:
        broker_logger.setLevel(level)
        broker_logger._logger.removeHandler(lines)  # Powertools has no public removeHandler
    # Log injection: whatever a request carried, each line is still one JSON object on one line.
    assert all("\n" not in line and isinstance(json.loads(line), dict) for line in lines.lines)
    FIGURES["logs: lines checked to be one JSON object each"] += len(lines.lines)
    out, err = capsys.readouterr()
    texts = [*lines.lines, out, err, caplog.text, *found.texts]
    FIGURES["secrets: log lines, outputs and messages checked"] += len(texts)
    FIGURES["secrets: distinct secret values watched"] += len(found.secrets)
    leaks = found.leaks(texts)
    FIGURES["secrets: found in logs or messages"] += len(leaks)
    assert not leaks, f"secrets leaked: {leaks[:3]}"


@pytest.fixture
def apicbase(apicbase: fakes.FakeApicbase, watch: SecretWatch) -> fakes.FakeApicbase:
    """The shared fake Apicbase, with every code and token it issues, and every one
    presented to it, registered as a secret."""
    issue_code, pair = apicbase.issue_code, apicbase._pair

    def recording_issue_code(scope: str = "accounts library") -> str:
        code = issue_code(scope)
        watch.secret(code)
        return code

    def recording_pair(scope: str, family: int | None = None) -> tuple[str, str]:
        access, refresh = pair(scope, family)
        watch.secret(access, refresh)
        return access, refresh

    apicbase.issue_code = recording_issue_code  # type: ignore[method-assign]
    apicbase._pair = recording_pair  # type: ignore[method-assign]
    # Whatever reaches Apicbase as a credential, from whichever test or fuzzer, is watched too.
    apicbase.on_form = lambda form: watch.secret_input(*(form.get(name) for name in PRESENTED))
    return apicbase


# --- the real handlers, on the test clock ----------------------------------------------------------
@dataclass
class Handlers:
    load: Callable[[str], ModuleType]
    aws: Any
    template: dict[str, Any]
    clock: Any
    context: Any

    def module(self, logical_id: str) -> ModuleType:
        """The handler module as Lambda imports it; its DEPS on the test clock (no real sleeps)."""
        module = self.load(logical_id)
        settings = Settings.from_env(self.aws.env(self.template, logical_id))
        built = deps_module.build(settings, session=self.aws.session, now=self.clock)
        built.sleep = self.clock.sleep
        module.DEPS = built
        return module

    def invoke(self, module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
        # A fresh context per invocation, as Lambda gives, on the test clock the handlers sleep on.
        context = LambdaContext(timeout_seconds=60, clock=self.clock)
        return module.lambda_handler(event, context)


@pytest.fixture
def clock() -> Any:
    """The test clock, which also kills a function that reaches its Timeout (``faults``)."""
    from tests.hostile.faults import LambdaClock  # noqa: PLC0415 (faults imports this module)

    return LambdaClock()


@pytest.fixture
def handlers(load_handler, aws, template, clock, lambda_context) -> Handlers:
    return Handlers(load_handler, aws, template, clock, lambda_context)


def http_event(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: str | None = None,
    cookies: list[str] | None = None,
) -> dict:
    """A payload-2.0 event built on the recorded samples in events/ (the callback's, or an IAM-signed
    admin request's), with API Gateway's treatment of repeated query keys: joined with commas."""
    event = load_event("callback.json" if path.startswith("/oauth/") else "admin_refresh.json")
    joined: dict[str, str] = {}
    for key, value in query or []:
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    for key in ("queryStringParameters", "pathParameters", "body"):
        event.pop(key, None)
    # The handlers route on the method and the path; routeKey is left as a catch-all.
    event.update(routeKey="$default", rawPath=path, isBase64Encoded=False)
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query or [])
    if joined:
        event["queryStringParameters"] = joined
    if body is not None:
        event["body"] = body
    if cookies:
        event["cookies"] = cookies  # payload 2.0: "name=value" strings
    context = event["requestContext"]
    context.update(routeKey="$default", requestId=str(uuid.uuid4()))
    context["http"].update(method=method, path=path)
    return event


# --- table helpers --------------------------------------------------------------------------------
def table_items(table: Any) -> list[dict[str, Any]]:
    """Everything in the table (a test's view; the functions themselves never scan)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return sorted(items, key=lambda item: item["pk"])
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def connection_items(table: Any) -> list[dict[str, Any]]:
    """The connections (a Query of the connections index: states may pile up beside them)."""
    return table.query(
        IndexName=CONNECTIONS_INDEX,
        KeyConditionExpression="entity = :entity",
        ExpressionAttributeValues={":entity": "connection"},
    )["Items"]


def stored_pair(deps: Any, connection_id: str) -> TokenPair:
    return deps.cipher.decrypt(connection_id, deps.connections.get(connection_id).tokens)


def body_json(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None
