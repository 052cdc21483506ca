"""``python -m local.run`` as a real process on 127.0.0.1, and what the e2e tests do with it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from local.browser import browser_session, open_connect_url
from local.sandbox.browserless import authorize_as
from local.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"  # kept by CI, ignored by git
TIMEOUT = 30
START_SECONDS = 120
CLIENT_ID = "e2e-client"
CLIENT_SECRET = "e2e-" + secrets.token_urlsafe(24)
CODE_LIFETIME_SECONDS = 5
# Only connections expiring within the hour are due, so the scheduler refreshes the tokens the
# scheduled-refresh test imports with a short expiry and leaves the week-long ones alone.
REFRESH_WINDOW_HOURS = 1
# The proxy's budget per Apicbase user and minute: small, so tests/e2e/test_proxy.py can spend it.
PROXY_BUDGET_PER_MINUTE = 30
# The line the local run logs for each AWS call a function's role refused (local/stack.py).
IAM_REFUSED = "local: IAM refused "


def at_once(calls: list[Callable[[], Any]], expected: type[Exception]) -> list[Any]:
    """Every call from its own thread, all released at the same moment; each one's result, or
    the ``expected`` exception it raised, in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except expected as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def run_env(**overrides: str) -> dict[str, str]:
    """The environment of a local run: ours without any Apicbase or AWS settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APICBASE_", "AWS_", "SANDBOX_", "REFRESH_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def run_briefly(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m local.run`` (or ``args``) expecting it to stop on its own."""
    command = [sys.executable, *(args or ("-m", "local.run"))]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Connected:
    connection_id: str
    callback: requests.Response
    state: str
    code: str


@contextmanager
def running(log_path: Path, **settings: str) -> Iterator[LocalRun]:
    """A LocalRun, ready, stopped on the way out."""
    run = LocalRun(log_path, **settings)
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop()


class LocalRun:
    """One ``python -m local.run`` (or ``command``, e.g. ``make run``) with the sandbox's test hooks
    and reuse protection on (Apicbase at its strictest); ``settings`` add to or replace its
    environment. stop() ends it and its children. Every run is kept in ``started``: the e2e suite
    fails a test during which a run logged a refused AWS call, unless the run ``expects_refusals``."""

    started: list[LocalRun] = []

    def __init__(
        self, log_path: Path, *, command: Sequence[str] = (), expects_refusals: bool = False, **settings: str
    ) -> None:
        self.expects_refusals = expects_refusals
        self.port, self.moto_port, self.sandbox_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.callback_url = f"{self.url}/oauth/callback"
        self.log_path = log_path
        # Where this run says where it is (apicbase-broker --local-run), beside its log.
        self.state_file = log_path.with_suffix(".json")
        # One browser: it opens connect_url (keeping the binder cookie) and follows the callback.
        self.http = browser_session()
        env = run_env(
            **{
                "PORT": str(self.port),
                "MOTO_PORT": str(self.moto_port),
                "SANDBOX_PORT": str(self.sandbox_port),
                "REFRESH_TICK_SECONDS": "1",
                "REFRESH_WINDOW_HOURS": str(REFRESH_WINDOW_HOURS),
                "SANDBOX_TEST_HOOKS": "1",
                "SANDBOX_CODE_LIFETIME": str(CODE_LIFETIME_SECONDS),
                "SANDBOX_CLIENT_ID": CLIENT_ID,
                "SANDBOX_CLIENT_SECRET": CLIENT_SECRET,
                "SANDBOX_REUSE_PROTECTION": "1",
                "APICBASE_RATE_LIMIT_PER_MINUTE": str(PROXY_BUDGET_PER_MINUTE),
                "LOCAL_STATE_FILE": str(self.state_file),
                **settings,
            }
        )
        self._log = open(log_path, "w")  # noqa: SIM115 (open for the process's whole life)
        self.command = list(command) or [sys.executable, "-m", "local.run"]
        # Its own process group, so that stop() can end the sandbox too if the run does not.
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        LocalRun.started.append(self)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"local.run exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if "Ctrl-C stops everything." in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"local.run was not ready within {START_SECONDS} s:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            if self.command[0] == "make":  # Ctrl-C in a terminal: make passes no signal on
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.http.close()
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def refusals(self) -> list[str]:
        """The AWS calls the functions' roles refused so far (local/iam.py), one line each."""
        return [line for line in self.log().splitlines() if line.startswith(IAM_REFUSED)]

    # --- HTTP ----------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.url + path, timeout=TIMEOUT, **kwargs)

    def connect_session(self, connection_id: str) -> dict[str, Any]:
        response = self.api("POST", "/connect-sessions", json={"connection_id": connection_id})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def authorize(self, connection_id: str, *, allow: bool = True) -> tuple[str, str]:
        """A connect session whose connect_url this browser opens, then the sandbox's login and
        consent: the redirect and the state."""
        session = self.connect_session(connection_id)
        authorize_url = open_connect_url(self.http, session["connect_url"])
        return authorize_as(self.sandbox_url, authorize_url, allow=allow), query_of(authorize_url)["state"]

    def connect(self, connection_id: str) -> Connected:
        location, state = self.authorize(connection_id)
        callback = self.http.get(location, timeout=TIMEOUT, allow_redirects=False)
        return Connected(connection_id, callback, state, query_of(location)["code"])

    def token(self, connection_id: str) -> str:
        response = self.api("GET", f"/connections/{connection_id}/token")
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    # --- the sandbox, as the application that owns the tokens ----------------------------------
    def sandbox_grant(self) -> dict[str, Any]:
        """A token pair straight from the sandbox (login, consent, code exchange), as another
        tool would get one: for the import endpoint."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": self.callback_url,
                "scope": "accounts library",
                "state": secrets.token_urlsafe(16),
            }
        )
        location = authorize_as(self.sandbox_url, f"{self.sandbox_url}/oauth/authorize/?{query}")
        code = query_of(location)["code"]
        response = self.http.post(
            f"{self.sandbox_url}/oauth/token/",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.callback_url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def import_pair(self, connection_id: str, pair: dict[str, Any], **extra: Any) -> requests.Response:
        fields = {"access_token": pair["access_token"], "refresh_token": pair["refresh_token"], **extra}
        return self.api("PUT", f"/connections/{connection_id}/tokens", json=fields)

    def sandbox_introspect(self, token: str) -> dict[str, Any]:
        response = self.http.post(
            f"{self.sandbox_url}/oauth/introspect/",
            data={"token": token, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def sandbox_hook(self, name: str, **switches: Any) -> dict[str, Any]:
        """POST to a test hook (``switches`` as its JSON body)."""
        response = self.http.post(f"{self.sandbox_url}/sandbox/{name}/", json=switches, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def sandbox_stats(self) -> dict[str, int]:
        response = self.http.get(f"{self.sandbox_url}/sandbox/stats/", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def worker_processes(self, function: str) -> int:
        """How many worker processes of ``function`` the run has now."""
        count = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                ppid = next(line for line in status.read_text().splitlines() if line.startswith("PPid:"))
                cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, StopIteration):
                continue  # gone meanwhile
            if int(ppid.split()[1]) == self.process.pid and function.encode() in cmdline:
                count += 1
        return count
