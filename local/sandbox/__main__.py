"""python -m local.sandbox: run the Apicbase sandbox until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from local.sandbox.server import PortUnavailable, Sandbox


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.sandbox",
        description="A local OAuth 2.0 authorization server that behaves like Apicbase.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", required=True, help="the one redirect URI of the client")
    parser.add_argument("--data-dir", help="where the SQLite database lives (default: a temporary dir)")
    parser.add_argument("--code-lifetime", type=int, default=60, help="seconds (default 60)")
    parser.add_argument("--access-token-lifetime", type=int, default=604800, help="seconds (default 604800)")
    parser.add_argument("--test-hooks", action="store_true", help="serve /sandbox/revoke/, /sandbox/stats/ and more")
    parser.add_argument("--user", default="demo", help="the demo user's name (default demo)")
    parser.add_argument("--password", default="demo", help="the demo user's password (default demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        sandbox = Sandbox(
            args.host,
            args.port,
            args.client_id,
            args.client_secret,
            args.redirect_uri,
            data_dir=args.data_dir,
            code_lifetime=args.code_lifetime,
            access_token_lifetime=args.access_token_lifetime,
            test_hooks=args.test_hooks,
            username=args.user,
            password=args.password,
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
