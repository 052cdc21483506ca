"""Every client secret the local run can generate reaches the sandbox intact, and never through a
command line (where argparse took a secret that begins with '-' for an option, one start in 64)."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from local.stack import Config, SandboxProcess, free_port

pytestmark = pytest.mark.e2e

# secrets.token_urlsafe's alphabet; the local run's secrets are 43 characters of it.
ALPHABET = string.ascii_letters + string.digits + "-_"
LENGTH = 43
SHAPES = {
    "leading dash": "-" + ALPHABET[: LENGTH - 1],
    "two leading dashes, like an option": "--client-id" + ALPHABET[: LENGTH - 11],
    "like -h": "-h" + "A" * (LENGTH - 2),
    "leading underscore": "_" + ALPHABET[-LENGTH + 1 :],
    "dashes only": "-" * LENGTH,
    "underscores only": "_" * LENGTH,
    "every character of the alphabet": ALPHABET,
}
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[dict[str, tuple[SandboxProcess, str]]]:
    """One sandbox per shape, started side by side as the local run starts its own."""
    started: dict[str, tuple[SandboxProcess, str]] = {}
    try:
        for shape, secret in SHAPES.items():
            port = free_port()
            started[shape] = (
                SandboxProcess(port, "shape-client", secret, REDIRECT_URI, Config()),
                f"http://127.0.0.1:{port}",
            )
        for process, _ in started.values():
            process.wait_ready("SANDBOX_PORT")
        yield started
    finally:
        for process, _ in started.values():
            process.stop()


@pytest.mark.parametrize("shape", SHAPES)
def test_the_secret_reaches_the_sandbox_intact(sandboxes: dict[str, tuple[SandboxProcess, str]], shape: str) -> None:
    process, url = sandboxes[shape]
    secret = SHAPES[shape]

    # When the client authenticates with the secret the sandbox was started with
    answer = requests.post(
        f"{url}/oauth/introspect/",
        data={"token": "none", "client_id": "shape-client", "client_secret": secret},
        timeout=30,
    )
    wrong = requests.post(
        f"{url}/oauth/introspect/",
        data={"token": "none", "client_id": "shape-client", "client_secret": secret[:-1]},
        timeout=30,
    )

    # Then the sandbox accepts it, and only it
    assert (answer.status_code, answer.json()) == (200, {"active": False})
    assert wrong.status_code == 401
    # And it was never on the sandbox's command line
    command_line = Path(f"/proc/{process.process.pid}/cmdline").read_bytes()
    assert secret.encode() not in command_line
