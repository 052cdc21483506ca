"""``apicbase-broker set-credentials``: an Apicbase application's client id and secret into the
stack's secret, checked with Apicbase before they are written.

They come from a prompt (the secret without echo) or from standard input, two lines, never from
the command line (every local user can read another's argv). Credentials Apicbase rejects are
not written (``--force`` writes them anyway): they would replace working ones and fail every
refresh of the application.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from apicbase_broker import ConfigurationError

from . import output, target
from .doctor import PASS, PLACEHOLDER, client_check, read_applications

# The layer's rule for application names (validation.APPLICATION_RE).
APPLICATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SECRET_MAX_AGE_SECONDS = 300  # the functions' cache of the secret (SECRET_MAX_AGE_SECONDS in template.yaml)


def _read_pair() -> tuple[str, str]:
    if sys.stdin.isatty():
        client_id = input("Apicbase client id: ")
        client_secret = getpass.getpass("Apicbase client secret (not echoed): ")
    else:
        client_id, client_secret = sys.stdin.readline(), sys.stdin.readline()
    client_id, client_secret = client_id.strip(), client_secret.strip()
    if not client_id or not client_secret:
        raise ConfigurationError("expected the client id and the client secret, one per line on stdin")
    if any(c.isspace() for c in client_id + client_secret):
        raise ConfigurationError("a client id or secret has no spaces; was something else pasted?")
    return client_id, client_secret


def cmd_set_credentials(args: argparse.Namespace, _api: Any) -> output.Result:
    if not APPLICATION_RE.fullmatch(args.application):
        raise ConfigurationError("--application must be 1-64 letters, digits, '.', '_' or '-'")
    broker = target.from_args(args)
    client_id, client_secret = _read_pair()
    check = client_check(broker, args.application, client_id, client_secret)
    if check.verdict != PASS and not args.force:
        text = f"{check.verdict}  {check.name}  {check.detail}\nNothing was written (--force writes them anyway)."
        return output.Result({"written": False, "check": check.__dict__}, text, exit_code=1)
    applications = read_applications(broker)
    previous = applications.get(args.application)
    applications[args.application] = {"client_id": client_id, "client_secret": client_secret}
    broker.client("secretsmanager").put_secret_value(
        SecretId=broker.outputs["SecretArn"], SecretString=json.dumps(applications)
    )
    lines = [
        f"{check.verdict}  {check.name}  {check.detail}",
        f"Written to {broker.outputs['SecretArn']} as application {args.application!r}; the functions use "
        f"them within {SECRET_MAX_AGE_SECONDS // 60} minutes (at once after an invalid_client).",
    ]
    old_id = previous.get("client_id") if isinstance(previous, dict) else None
    if old_id not in (None, client_id, PLACEHOLDER):
        lines.append(
            f"The client id changed (was {old_id}): connections made with the old application fail "
            "(client_mismatch) until they are connected again."
        )
    lines.append(f"Next: {broker.command('doctor')}")
    data = {"written": True, "application": args.application, "check": check.__dict__}
    return output.Result(data, "\n".join(lines), exit_code=0 if check.verdict == PASS else 1)


def add_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    sub = command(
        "set-credentials",
        cmd_set_credentials,
        "write an Apicbase application's client id and secret (prompt or stdin), checked with Apicbase first",
        "set-credentials --stack-name apicbase-oauth-broker --application default   # then answer the prompts",
    )
    sub.add_argument("--application", default="default", help="the application's name in the secret (default: default)")
    sub.add_argument("--force", action="store_true", help="write them even if Apicbase does not accept them")
    target.add_options(sub)
    sub.set_defaults(uses_api=False)
