"""python -m local.run: the broker on this machine, with no AWS account and no Docker.

Each function runs in its own pool of worker processes, as Lambda runs containers.

Environment: PORT (3000), MOTO_PORT (5000), SANDBOX_PORT (8000), REFRESH_TICK_SECONDS (60),
REFRESH_WINDOW_HOURS, LOG_LEVEL, LOCAL_POOL_SIZE (every function's pool size; by default the
template's reserved concurrency, else the SQS MaximumConcurrency, else 4),
LOCAL_POOL_SIZE_<LogicalId> (one function's), SANDBOX_CODE_LIFETIME (60), SANDBOX_TEST_HOOKS,
SANDBOX_CLIENT_ID / SANDBOX_CLIENT_SECRET (generated per run by default), TEMPLATE_FILE; or
APICBASE_AUTHORIZE_URL, APICBASE_TOKEN_URL, APICBASE_INTROSPECT_URL, APICBASE_CLIENT_ID and
APICBASE_CLIENT_SECRET to use a real Apicbase application (its redirect URL must be this
run's callback URL) instead of the sandbox. APICBASE_API_URL is where the proxy route forwards
(default: the sandbox's own protected API), APICBASE_RATE_LIMIT_PER_MINUTE its budget per user (100).
APICBASE_REFRESH_READ_TIMEOUT: seconds a refresh waits for the token endpoint (25).
LOCAL_STATE_FILE: where this run says where it is, for apicbase-broker --local-run (doctor,
set-credentials); default .local-data/local-run.json.
APICBASE_REVOKE_URL: where DELETE /connections/{id} revokes (RFC 7009; default: the sandbox's, and
none at all with another Apicbase, so that its tokens never reach Apicbase's production host).
BRAND_NAME, SUPPORT_URL, DEFAULT_RETURN_URL: the callback's pages in your product's name (the
template's BrandName, SupportUrl and DefaultReturnUrl).

State lasts for the run: moto and the sandbox keep it in memory and a temporary directory, so
connections and tokens are gone when it stops.

The sandbox's switches (Apicbase at its worst; python -m local.sandbox --help says more):
SANDBOX_REUSE_PROTECTION=1 (a used refresh token revokes its whole family),
SANDBOX_GRACE_PERIOD (seconds a rotated refresh token still works), SANDBOX_TOKEN_DELAY
(seconds the token endpoint waits after carrying out a grant), SANDBOX_ODD_2XX=1 (token
answers without expires_in), SANDBOX_RATE_LIMIT (requests per minute per user, then 429).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

MINIMUM_PYTHON = (3, 11)
CONNECTION_ID = "demo"


def python_problem() -> str | None:
    if sys.version_info < MINIMUM_PYTHON:
        needed, found = (".".join(map(str, v)) for v in (MINIMUM_PYTHON, sys.version_info[:3]))
        return f"Python {needed} or newer is needed; this is {found}"
    return None


def fail(line: str) -> int:
    print(f"local run: {line}", file=sys.stderr, flush=True)
    return 2


def load_stack_module() -> Any:
    """The stack's module, imported only after the Python check (it needs 3.11 and the packages)."""
    from local import stack  # noqa: PLC0415 (see the docstring)

    return stack


def banner(stack: Any, started: float, state_file: Any = None) -> str:
    url = stack.url
    try:  # first: its AWS calls count among the refused ones the banner shows
        session: dict[str, Any] | None = stack.connect_session(CONNECTION_ID)
        session_problem = ""
    except Exception as exc:  # the stack runs anyway; the curl below makes another link
        session, session_problem = None, type(exc).__name__
    lines = [
        "",
        f"Apicbase OAuth Broker is running locally (started in {time.monotonic() - started:.1f} s)",
        f"  broker API:       {url}   (every HttpApi route of template.yaml)",
        f"  callback URL:     {stack.callback_url}",
    ]
    if stack.sandbox_url:
        lines.append(f"  Apicbase sandbox: {stack.sandbox_url}   (log in as demo / demo)")
    else:
        lines.append(f"  Apicbase:         {stack.config.external.authorize_url}   (your application)")
    lines += [
        f"  AWS (moto):       {stack.moto_url}",
        f"  state file:       {state_file}   (apicbase-broker doctor --local-run FILE)",
        "  worker processes: at most "
        + ", ".join(f"{pool.size} {name}" for name, pool in stack.pools.items())
        + " (LOCAL_POOL_SIZE)",
        f"  refresh schedule: every {stack.config.refresh_tick_seconds:g} s, worker fed from the local queue",
        f"  IAM:              each function's role from the template, enforced on every AWS call it makes; "
        f"refused so far: {stack.iam_refused} (each refusal is logged: 'IAM refused ...')",
        "  state:            for this run only: connections and tokens are gone when it stops",
        "  connection events: the table's stream, read as Lambda's event source does"
        # The host only: a webhook's path may be its secret.
        + (f"; webhook on {urlsplit(stack.webhook.webhook.url).netloc}" if stack.webhook else " (no WEBHOOK_URL)"),
        "",
        "  NOTE: admin routes are served WITHOUT SigV4 (no IAM auth) here; everything listens on 127.0.0.1 only.",
        "",
    ]
    if session is not None:
        lines += [
            f'Connect link for connection "{CONNECTION_ID}" (open it in a browser; '
            f"valid until {session['expires_at']}):",
            f"  {session['connect_url']}",
        ]
    else:
        lines.append(f"(could not create a connect session: {session_problem}; see the logs above)")
    lines += [
        "",
        "Try the admin API:",
        f"  curl -s {url}/connections/{CONNECTION_ID}",
        f"  curl -s -X POST {url}/connect-sessions -H 'content-type: application/json' "
        """-d '{"connection_id": "lib-42"}'""",
        f"  curl -s -X POST {url}/connections/{CONNECTION_ID}/refresh",
        f"  curl -s {url}/connections/{CONNECTION_ID}/token   # prints the access token itself",
        f"  curl -s '{url}/connections/{CONNECTION_ID}/apicbase/api/v2/products/?page_size=2'"
        "   # Apicbase's API through the broker",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None, prog: str, doc: str) -> None:
    """Settings come from the environment; the command line only answers --help."""
    summary, _, details = doc.partition("\n\n")
    argparse.ArgumentParser(
        prog=prog, description=summary, epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv, "python -m local.run", __doc__ or "")
    problem = python_problem()
    if problem:
        return fail(problem)
    try:
        stack_module = load_stack_module()
        from local import state as local_state  # noqa: PLC0415 (as the stack's module, see its docstring)
    except ImportError as exc:
        return fail(f"the {exc.name} package is missing: install requirements-dev.txt into the venv first")

    # Ctrl-C and SIGTERM interrupt whatever runs, start-up included; the stack is then stopped
    # with both ignored, so that a second Ctrl-C cannot leave the sandbox behind.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    started = time.monotonic()
    stack = None
    state_file = local_state.path_from_env()
    try:
        stack = stack_module.Stack(stack_module.Config.from_env())
        stack.start()
        local_state.write(stack, state_file)
        print(banner(stack, started, state_file), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    except stack_module.StartupError as exc:
        return fail(str(exc))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        if stack is not None:
            local_state.remove(state_file)
            stack.stop()
    if stack is not None:
        print(f"AWS calls refused by the functions' roles in this run: {stack.iam_refused}", flush=True)
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
