"""Every command of README.md, as written, against a local run started with ``make run``; and the
examples. A block that cannot run here is left out by name, and README says why next to it.

Only the port differs from what a person types: README's ``http://127.0.0.1:3000`` is this run's
URL. The integrator's side runs as a new user's would: ``pip install ./`` into a fresh venv (offline:
its dependencies are this suite's, the build backend too), no AWS credentials, the broker's URL in
``APICBASE_BROKER_API_URL``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from local.browser import open_connect_url
from local.sandbox.browserless import authorize_as

from tests.e2e.localrun import ARTIFACTS, ROOT, TIMEOUT, LocalRun

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
README_URL = "http://127.0.0.1:3000"
# What pip needs from a clone to install the client and the CLI.
DISTRIBUTION = ("pyproject.toml", "README.md", "cli")


@dataclass(frozen=True)
class Block:
    section: str  # the README text from the block's "## " heading down to the block
    language: str
    code: str

    @property
    def name(self) -> str:
        """The first line without its comment: how the tests below name the block."""
        return " ".join(self.code.splitlines()[0].split("  #")[0].split())


def command_blocks() -> list[Block]:
    """README's fenced sh and python blocks, in order."""
    found, section = [], ""
    for part in re.split(r"(```[a-z]*\n.*?```)", README.read_text(), flags=re.DOTALL):
        fence = re.match(r"```([a-z]*)\n(.*)```", part, re.DOTALL)
        if fence is None:
            top = part.rsplit("\n## ", 1)
            section = (section + part) if len(top) == 1 else top[1]
        else:
            if fence[1] in {"sh", "python"}:
                found.append(Block(section, fence[1], fence[2]))
            section += part
    return found


def block(name: str) -> Block:
    (found,) = [b for b in command_blocks() if b.name == name]
    return found


WEBHOOK_BLOCK = "WEBHOOK_URL=http://127.0.0.1:9000/apicbase-events WEBHOOK_API_KEY=some-secret make run"
# Each block, by name: the test that runs it, or the words with which README says why it cannot run here.
RUN_BY = {
    "make run": "test_the_quick_start",
    "curl -s http://127.0.0.1:3000/connections/demo | python3 -m json.tool": "test_the_quick_start",
    "export APICBASE_BROKER_STACK=apicbase-oauth-broker": "test_the_admin_cli_examples",
    "pip install ./": "integrator",
    'apicbase-broker connect lib-42 --scopes "accounts library"': "test_the_integrator_quick_start",
    "from apicbase_broker import BrokerClient": "test_the_integrator_quick_start",
    'token = client.token("lib-42")': "test_the_integrator_quick_start",
    WEBHOOK_BLOCK: "test_the_webhook_block_is_how_the_e2e_run_is_started",
}
LEFT_OUT = {
    "APICBASE_CLIENT_ID=... APICBASE_CLIENT_SECRET=... \\": "needs a real Apicbase application",
    "make deploy": "needs an AWS account",
    "pip install -e .": "needs an AWS account",
}


def test_the_webhook_block_is_how_the_e2e_run_is_started():
    # Given README's webhook block, Then it is make run with exactly the two variables the e2e
    # suite's run is started with (tests/e2e/conftest.py), whose deliveries test_webhook.py checks
    *assignments, make, run = block(WEBHOOK_BLOCK).code.split()
    names = [assignment.split("=", 1)[0] for assignment in assignments]
    assert (names, make, run) == (["WEBHOOK_URL", "WEBHOOK_API_KEY"], "make", "run")
    conftest = (ROOT / "tests" / "e2e" / "conftest.py").read_text()
    assert all(f"{name}=" in conftest for name in names)


def test_every_command_block_of_the_readme_is_run_or_left_out_by_name():
    assert sorted(b.name for b in command_blocks()) == sorted([*RUN_BY, *LEFT_OUT])


@pytest.mark.parametrize("name", sorted(LEFT_OUT))
def test_a_block_that_cannot_run_here_says_why_in_the_readme(name):
    assert LEFT_OUT[name] in " ".join(block(name).section.split())
    pytest.skip(f"README block {name!r} {LEFT_OUT[name]}")


# --- the run, and the integrator's machine --------------------------------------------------------
@pytest.fixture(scope="module")
def run() -> Iterator[LocalRun]:
    """``make run`` with the template's own proxy budget (the e2e suite's other run spends a smaller one)."""
    ARTIFACTS.mkdir(exist_ok=True)
    started = LocalRun(
        ARTIFACTS / "e2e-readme-run.log",
        command=["make", "--no-print-directory", "run"],
        APICBASE_RATE_LIMIT_PER_MINUTE="100",
        MAKEFLAGS="",
        MAKELEVEL="",
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def as_written(code: str, run: LocalRun) -> str:
    return code.replace(README_URL, run.url)


def sh(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_process(["bash", "-euo", "pipefail", "-c", code], env, cwd)


def run_process(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def integrator(run: LocalRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A new user's shell after README's install block: a fresh venv with the client and the CLI
    installed by ``pip install ./`` from a clone, no AWS credentials, the broker's URL exported."""
    home = tmp_path_factory.mktemp("integrator")
    clone = copy_distribution(home / "clone")
    env = offline_venv(home / "venv", home)
    installed = sh(as_written(block("pip install ./").code, run), env, clone)
    assert installed.returncode == 0, installed.stderr
    for name, value in re.findall(r"^export (\w+)=(\S+)", as_written(block("pip install ./").code, run), re.M):
        env[name] = value
    return env


def copy_distribution(clone: Path) -> Path:
    clone.mkdir()
    for name in DISTRIBUTION:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, clone / name)
    return clone


def offline_venv(venv: Path, home: Path) -> dict[str, str]:
    """A venv whose pip installs offline: this suite's packages are visible to it (a .pth file),
    none of the machine's pip configuration or AWS settings reach it."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "suite.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIP_", "APICBASE_", "PYTHON"))}
    env |= {
        "PATH": f"{venv / 'bin'}:{env['PATH']}",
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return env


def complete_in_the_browser(run: LocalRun, connect_url: str) -> None:
    """What the person who opens the link does: sign in to the sandbox as demo and allow access."""
    location = authorize_as(run.sandbox_url, open_connect_url(run.http, connect_url))
    assert run.http.get(location, timeout=TIMEOUT).status_code == 200


def api_requests(run: LocalRun) -> int:
    return run.sandbox_stats()["api_requests"]


# --- the blocks ------------------------------------------------------------------------------------
def test_the_quick_start(run):
    # Given make run (the run itself: make test is the suite that runs this) and its banner's link,
    # opened by the person who reads it
    assert [line.split("#")[0].strip() for line in block("make run").code.splitlines()] == ["make run", "make test"]
    assert run.command[-1] == "run"
    banner = run.log()
    assert "state:            for this run only" in banner
    link = re.search(r'Connect link for connection "demo".*\n\s+(\S+)', banner)
    assert link, banner
    complete_in_the_browser(run, link[1])
    # When the quick start's curl commands run
    curl = block("curl -s http://127.0.0.1:3000/connections/demo | python3 -m json.tool")
    result = sh(as_written(curl.code, run), os.environ.copy(), ROOT)
    # Then the connection shows active, a token comes, and Apicbase's products come through the broker
    assert result.returncode == 0, result.stderr
    assert '"status": "active"' in result.stdout
    assert '"count": 450' in result.stdout


def test_the_integrator_quick_start(run, integrator, tmp_path):
    # Given step 1 as written: connect lib-42, and its owner opens the link
    step_1 = block('apicbase-broker connect lib-42 --scopes "accounts library"')
    connect = sh(as_written(step_1.code, run), integrator, tmp_path)
    assert connect.returncode == 0, connect.stderr
    complete_in_the_browser(run, next(w for w in connect.stdout.split() if w.startswith(f"{run.url}/oauth/start?")))
    before = api_requests(run)
    # When step 2's Python runs as written, then the token block after it
    code = block("from apicbase_broker import BrokerClient").code + 'print("products:", len(products))\n'
    code += block('token = client.token("lib-42")').code + 'print("token:", bool(token))\n'
    result = run_process(["python", "-c", code], integrator, tmp_path)
    # Then it paged through the sandbox's 450 products in 3 requests through the proxy, with no AWS
    # credentials anywhere, and got the token itself too
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["products: 450", "token: True"]
    assert api_requests(run) - before == 3
    assert not any(name.startswith("AWS_") for name in integrator)


def test_the_install_line_also_works_from_the_repository_url(tmp_path):
    # Given the repository at a URL (a git repository of a clone's files)
    repository = copy_distribution(tmp_path / "repository")
    for git in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *git], cwd=repository, check=True, capture_output=True, timeout=60)
    env = offline_venv(tmp_path / "venv", tmp_path) | {"REPO_URL": repository.as_uri()}
    # When README's URL form runs, as written
    (line,) = re.findall(r'`(pip install "apicbase-oauth-broker @ git\+\$REPO_URL")`', README.read_text())
    installed = sh(line, env, tmp_path)
    # Then the CLI is there
    assert installed.returncode == 0, installed.stderr
    assert sh("apicbase-broker --help", env, tmp_path).returncode == 0


@pytest.fixture
def lib_42(run: LocalRun) -> str:
    """lib-42 connected (the integrator quick start does it too; a test may run alone)."""
    assert run.connect("lib-42").callback.status_code == 200
    return "lib-42"


def test_the_admin_cli_examples(run, integrator, lib_42, tmp_path):
    # When step 3's commands run as written (APICBASE_BROKER_API_URL, exported, names the local run)
    result = sh(as_written(block("export APICBASE_BROKER_STACK=apicbase-oauth-broker").code, run), integrator, tmp_path)
    # Then a link is printed, the connection shown, and its token printed alone on the last line
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{run.url}/oauth/start?session=") for line in lines)
    assert any(re.match(r"status\s+active$", line) for line in lines)
    assert run.sandbox_introspect(lines[-1])["active"] is True


def test_the_service_example_reads_every_product_through_the_broker(run, integrator, lib_42):
    # When the example runs for lib-42 and a library never connected
    example = ROOT / "examples" / "service_outside_lambda.py"
    result = run_process(["python", str(example), lib_42, "never-connected"], integrator)
    # Then it counted lib-42's 450 products, reported the other, and exits 1 for it
    assert "library lib-42: 450 products" in result.stderr
    assert "library never-connected was never connected" in result.stderr
    assert result.returncode == 1


def test_the_consumer_lambda_example_reads_recipes_with_a_token_from_the_broker(run, lib_42):
    # Given the example's variables: the broker's URL, Apicbase's (the sandbox's) and the library
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "APICBASE_BROKER_API_URL": run.url,
        "APICBASE_API_BASE": f"{run.sandbox_url}/api/v2",
        "APICBASE_CONNECTION_ID": lib_42,
        "PYTHONPATH": f"{ROOT / 'layers' / 'apicbase_oauth'}:{ROOT}",
    }
    # When its handler runs, Then it answers the first page of the library's recipes
    code = (
        "import json; from examples.consumer_lambda import lambda_handler; print(json.dumps(lambda_handler({}, None)))"
    )
    result = run_process([sys.executable, "-c", code], env)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert (page["count"], len(page["results"])) == (60, 10)
