"""python -m local.sandbox: run the Apicbase sandbox until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from local.sandbox.server import PortUnavailable, Sandbox
from local.sandbox_switches import ENVIRONMENT, HELP, Switches

SECRET_VARIABLE = "SANDBOX_CLIENT_SECRET"  # noqa: S105 (a variable name, not a secret)


def _parser(defaults: Switches) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.sandbox",
        description="A local OAuth 2.0 authorization server that behaves like Apicbase.",
        epilog=f"The client secret is read from {SECRET_VARIABLE} in the environment, never from the command "
        "line (where every local user could read it, and argparse would take a secret that begins with '-' "
        "for an option). Each switch can also be set by its environment variable.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--redirect-uri", required=True, help="the one redirect URI of the client")
    parser.add_argument("--data-dir", help="where the SQLite database lives (default: a temporary dir)")
    parser.add_argument("--code-lifetime", type=int, default=60, help="seconds (default 60)")
    parser.add_argument("--access-token-lifetime", type=int, default=604800, help="seconds (default 604800)")
    parser.add_argument(
        "--test-hooks", action="store_true", help="serve /sandbox/revoke/, /sandbox/stats/, /sandbox/switches/ and more"
    )
    parser.add_argument("--user", default="demo", help="the demo user's name (default demo)")
    parser.add_argument("--password", default="demo", help="the demo user's password (default demo)")
    switches = parser.add_argument_group("switches (Apicbase at its worst, on request)")
    for name, variable in ENVIRONMENT.items():
        flag, default = _flag(name), getattr(defaults, name)
        text = f"{HELP[name]} ({variable}"
        if isinstance(default, bool):
            switches.add_argument(flag, action="store_true", default=default, help=f"{text})")
        else:
            metavar = "N" if name == "rate_limit" else "SECONDS"
            help_ = f"{text}; default {default:g})"
            switches.add_argument(flag, type=type(default), default=default, metavar=metavar, help=help_)
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        defaults = Switches.from_env()
    except ValueError as error:
        print(f"sandbox: {error}", file=sys.stderr, flush=True)
        return 2
    parser = _parser(defaults)
    args = parser.parse_args(argv)
    if not os.environ.get(SECRET_VARIABLE):
        parser.error(f"set the client secret in {SECRET_VARIABLE}")
    try:
        switches = defaults.changed({name: getattr(args, name) for name in ENVIRONMENT}, _flag)
        sandbox = Sandbox(
            args.host,
            args.port,
            args.client_id,
            os.environ.get(SECRET_VARIABLE, ""),
            args.redirect_uri,
            data_dir=args.data_dir,
            code_lifetime=args.code_lifetime,
            access_token_lifetime=args.access_token_lifetime,
            test_hooks=args.test_hooks,
            username=args.user,
            password=args.password,
            switches=switches,
        )
    except ValueError as error:
        parser.error(str(error))

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    try:
        sandbox.start()
    except PortUnavailable as error:
        print(f"sandbox: {error.strerror}", file=sys.stderr, flush=True)
        return 2
    print(f"sandbox listening on {sandbox.url}", flush=True)
    stopping.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
