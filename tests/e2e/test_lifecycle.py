"""Starting and stopping ``python -m local.run``: a clean Ctrl-C, and one clear line when it cannot start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from local.stack import free_port

from tests.e2e.localrun import LocalRun, at_once, run_briefly, run_env

pytestmark = pytest.mark.e2e


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("local run: ")
    for phrase in phrases:
        assert phrase in lines[0]


@pytest.mark.parametrize(
    "stop",
    [lambda pid: os.killpg(pid, signal.SIGINT), lambda pid: os.kill(pid, signal.SIGTERM)],
    ids=["ctrl-c-to-the-terminals-process-group", "sigterm"],
)
def test_a_signal_stops_the_run_its_workers_and_the_sandbox(tmp_path: Path, stop: Any) -> None:
    # Given a run that is ready, with several warm workers in the admin API's pool
    run = LocalRun(tmp_path / "run.log")
    try:
        run.wait_ready()
        calls = [lambda: requests.get(f"{run.url}/connections/nobody", timeout=60)] * 4
        assert [r.status_code for r in at_once(calls, requests.RequestException)] == [404] * 4
        assert run.worker_processes("ConnectionsFunction") >= 2

        # When it gets Ctrl-C (the terminal sends it to every process of the group) or SIGTERM
        stop(run.process.pid)
        code = run.process.wait(timeout=30)
    finally:
        run.stop()

    # Then it says so and exits 0, with nothing left behind: no sandbox, no listening port
    assert code == 0
    assert run.log().rstrip().endswith("stopped.")
    assert "Traceback" not in run.log()
    with pytest.raises(ProcessLookupError):
        os.killpg(run.process.pid, 0)
    for port in (run.port, run.sandbox_port, run.moto_port):
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))


def test_a_port_in_use_gives_one_line_naming_the_setting() -> None:
    # Given the broker's port already taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When the run starts on it
        result = run_briefly(run_env(PORT=str(port), MOTO_PORT=str(free_port()), SANDBOX_PORT=str(free_port())))

    # Then it stops at once with one line that says which port and which setting
    assert_one_clear_line(result, f"port {port}", "already in use", "PORT")


def test_a_broken_template_gives_one_line(tmp_path: Path) -> None:
    # Given a template that is not valid YAML
    broken = tmp_path / "template.yaml"
    broken.write_text("Resources:\n  Table: [unclosed\n")

    # When the run starts with it
    result = run_briefly(run_env(TEMPLATE_FILE=str(broken)))

    # Then one line says what is wrong with which file
    assert_one_clear_line(result, "template.yaml is not valid YAML")


@pytest.mark.parametrize(
    ("variable", "value", "phrase"),
    [
        ("LOCAL_POOL_SIZE", "many", "LOCAL_POOL_SIZE must be a number"),
        ("LOCAL_POOL_SIZE_ConnectionsFunction", "0", "must be between 1 and 100"),
        ("LOCAL_POOL_SIZE_NoSuchFunction", "2", "the template has no function NoSuchFunction"),
        ("SANDBOX_RATE_LIMIT", "lots", "SANDBOX_RATE_LIMIT must be a number"),
    ],
)
def test_a_bad_pool_size_or_switch_gives_one_line(variable: str, value: str, phrase: str) -> None:
    # When the run starts with a setting it cannot use
    result = run_briefly(run_env(**{variable: value, "PORT": str(free_port()), "MOTO_PORT": str(free_port())}))

    # Then one line says which and why
    assert_one_clear_line(result, phrase)


def test_a_python_older_than_3_11_gives_one_line() -> None:
    # Given an interpreter that says it is 3.10
    pretend = "import sys; sys.version_info = (3, 10, 14, 'final', 0); from local.run import main; sys.exit(main())"

    # When the run starts on it
    result = run_briefly(run_env(), "-c", pretend)

    # Then one line says which Python is needed
    assert_one_clear_line(result, "Python 3.11 or newer is needed; this is 3.10.14")


def test_settings_of_another_apicbase_must_come_complete() -> None:
    # Given only some of the settings for a real Apicbase application
    env = run_env(APICBASE_CLIENT_ID="abc", APICBASE_CLIENT_SECRET="not-printed")

    # When the run starts
    result = run_briefly(env)

    # Then one line names the missing ones, and never the secret
    assert_one_clear_line(result, "APICBASE_AUTHORIZE_URL", "APICBASE_TOKEN_URL", "APICBASE_INTROSPECT_URL")
    assert "not-printed" not in result.stderr + result.stdout
