"""``apicbase-broker``: the operator's command line for the broker's admin API.

Exit codes: 0 ok, 1 the API failed or could not be reached, 2 usage or configuration,
3 the connection needs to be connected again, 4 no such connection.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import webbrowser
from collections.abc import Callable, Sequence
from typing import Any

from apicbase_broker import BrokerClient, BrokerError, ConfigurationError
from apicbase_broker.client import aws_session, connection_path
from apicbase_broker.signing import is_local

from . import output

OK, API_FAILED, USAGE, NEEDS_REAUTHORIZATION, NOT_FOUND = 0, 1, 2, 3, 4
ENV_API_URL = "APICBASE_BROKER_API_URL"
ENV_STACK = "APICBASE_BROKER_STACK"


class UsageError(Exception):
    """Bad arguments or configuration (exit code 2)."""


# One line that says what to do, by the API's error code.
HINTS = {
    "needs_reauthorization": "connect it again: apicbase-broker connect {id}",
    "connection_not_found": "see the connections that exist: apicbase-broker list",
    "invalid_grant": "the code expired (60 s) or was used; start again: apicbase-broker connect {id}",
    "invalid_client": "fix the client id/secret in the stack's secret (output SecretArn), then retry",
    "client_mismatch": "the secret's client id changed; put the original application back or reconnect",
    "refresh_in_progress": "another refresh is running; retry in a few seconds",
    "rate_limited": "Apicbase is rate limiting (100 requests/minute); retry in a minute",
    "apicbase_unavailable": "Apicbase did not answer; retry later",
    "dependency_unavailable": "an AWS dependency failed; retry in a few seconds",
    "configuration_error": "the stack's configuration is wrong; see the function's logs",
    "forbidden": "the API refused the signature: check AWS credentials, region and execute-api:Invoke",
    "throttled": "the API is throttling; retry in a few seconds",
    "unreachable": "check --api-url (or start the local run: python -m local.run)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return OK if exc.code == 0 else USAGE
    try:
        result = args.command(args, _api(args) if getattr(args, "uses_api", True) else None)
    except (UsageError, ConfigurationError) as exc:
        _fail(f"{exc}")
        return USAGE
    except BrokerError as exc:
        return _api_failed(args, exc)
    except KeyboardInterrupt:
        return USAGE
    output.emit(result, as_json=args.json)
    return result.exit_code


def _api_failed(args: argparse.Namespace, exc: BrokerError) -> int:
    hint = HINTS.get(exc.code, "see the API's logs for details").format(id=getattr(args, "connection_id", "ID"))
    where = f"HTTP {exc.status}, " if exc.status else ""
    _fail(f"{exc.message.rstrip('.')} ({where}{exc.code}); {hint}")
    if args.json:
        print(json.dumps({"error": {"status": exc.status, "code": exc.code, "message": exc.message}}))
    if exc.code in {"needs_reauthorization", "invalid_grant"}:
        return NEEDS_REAUTHORIZATION
    if exc.code == "connection_not_found":
        return NOT_FOUND
    return API_FAILED


def _fail(message: str) -> None:
    # One line, whatever the server sent (an HTML error page, control characters).
    print(f"apicbase-broker: error: {' '.join(message.split())}", file=sys.stderr)


# --- configuration -------------------------------------------------------------------------------
def _api(args: argparse.Namespace) -> BrokerClient:
    url = args.api_url or os.environ.get(ENV_API_URL)
    if url and is_local(url):
        return BrokerClient(url)
    options = {"region": args.region, "profile": args.profile}
    if url:
        return BrokerClient(url, session=aws_session(**options), region=args.region)
    stack = args.stack_name or os.environ.get(ENV_STACK)
    if not stack:
        raise UsageError(f"no API URL: pass --api-url, set {ENV_API_URL}, or pass --stack-name")
    try:
        return BrokerClient.from_stack(stack, **options)
    except ConfigurationError as exc:
        raise UsageError(f"{exc}; check --stack-name and --region") from None


# --- commands ------------------------------------------------------------------------------------
def _path(args: argparse.Namespace, suffix: str = "") -> str:
    return connection_path(args.connection_id, suffix)


def _options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The optional body fields given on the command line (same names as in the API)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _connection(api: BrokerClient, method: str, path: str, **kwargs: Any) -> output.Result:
    view = api.request(method, path, **kwargs)
    return output.Result(view, output.fields(view))


def cmd_connect(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    options = _options(args, "scopes", "return_url", "application", "expected_username")
    session = api.request("POST", "/connect-sessions", body={"connection_id": args.connection_id, **options})
    if args.open:
        webbrowser.open(session["connect_url"])
    text = (
        f"Open this URL to connect {session['connection_id']} (valid until {session['expires_at']}; it works once,\n"
        f"and the Apicbase sign-in must finish in the browser that opened it):\n"
        f"{session['connect_url']}\n"
        f"Apicbase redirects to {session['redirect_uri']}; it must be registered in your Apicbase application."
    )
    return output.Result(session, text)


def cmd_list(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    query = {"limit": str(args.limit)}
    rows: list[dict[str, Any]] = []
    while True:
        page = api.request("GET", "/connections", query=query)
        rows.extend(page["connections"])
        if not (args.all and page.get("next_cursor")):
            break
        query["cursor"] = page["next_cursor"]
    data = {"connections": rows, "next_cursor": None if args.all else page.get("next_cursor")}
    text = output.table(rows, ["connection_id", "status", "application", "username", "updated_at"])
    if data["next_cursor"]:
        text += "\n(more: use --all)"
    return output.Result(data, text)


def cmd_show(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    return _connection(api, "GET", _path(args), query={"introspect": "true"} if args.introspect else None)


def cmd_token(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    view = api.request("GET", _path(args, "/token"))
    # Alone on stdout, so that `$(apicbase-broker token ID)` is the token.
    return output.Result(view, view["access_token"])


def cmd_refresh(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    return _connection(api, "POST", _path(args, "/refresh"))


def cmd_paste_code(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    body = {"code": _secret_input("Authorization code: "), **_options(args, "application", "redirect_uri")}
    return _connection(api, "POST", _path(args, "/authorization-code"), body=body)


def cmd_import_tokens(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    body = {**_tokens_input(args.file), **_options(args, "expires_in", "application")}
    return _connection(api, "PUT", _path(args, "/tokens"), body=body)


def cmd_disconnect(args: argparse.Namespace, api: BrokerClient) -> output.Result:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("disconnect deletes the stored tokens; pass --yes to confirm")
        if input(f"Delete connection {args.connection_id} and its tokens? [y/N] ").strip().lower() != "y":
            raise UsageError("not confirmed; nothing was deleted")
    answer = api.request("DELETE", _path(args))
    revocation = answer.get("revocation")
    text = {
        "revoked": "disconnected; the refresh token was revoked at Apicbase",
        "not_configured": "disconnected; not revoked at Apicbase (no revocation endpoint is configured)",
    }.get(
        revocation,
        f"disconnected; revoking at Apicbase FAILED ({answer.get('revocation_error')}): "
        "the grant may still be live there",
    )
    return output.Result(answer, text)


# --- secrets come from stdin or a prompt, never from argv (shell history, ps) --------------------------
def _secret_input(prompt: str) -> str:
    value = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    value = value.strip()
    if not value:
        raise UsageError(f"nothing read for {prompt.rstrip(': ').lower()}; pipe it on stdin")
    return value


def _tokens_input(path: str | None) -> dict[str, Any]:
    if path is None and sys.stdin.isatty():
        return {"access_token": _secret_input("Access token: "), "refresh_token": _secret_input("Refresh token: ")}
    try:
        if path is None:
            raw = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                raw = handle.read()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UsageError(f"expected JSON with access_token and refresh_token ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not {"access_token", "refresh_token"} <= data.keys():
        raise UsageError('expected JSON like {"access_token": "...", "refresh_token": "..."}')
    return {k: data[k] for k in ("access_token", "refresh_token", "expires_in") if k in data}


# --- arguments -----------------------------------------------------------------------------------
def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> argparse.ArgumentParser:
    # Given again after the command: SUPPRESS there, so a default cannot overwrite a value given before it.
    none, false = (argparse.SUPPRESS, argparse.SUPPRESS) if suppress else (None, False)
    parser.add_argument("--api-url", default=none, help=f"admin API base URL (or {ENV_API_URL})")
    parser.add_argument("--stack-name", default=none, help=f"read ApiUrl from this stack's outputs (or {ENV_STACK})")
    parser.add_argument("--region", default=none, help="AWS region (default: from the URL or your AWS config)")
    parser.add_argument("--profile", default=none, help="AWS profile to sign with")
    parser.add_argument("--json", action="store_true", default=false, help="machine-readable output")
    return parser


def _parser() -> argparse.ArgumentParser:
    common = _common_options(argparse.ArgumentParser(add_help=False), suppress=True)
    parser = _common_options(
        argparse.ArgumentParser(
            prog="apicbase-broker",
            description="Operate an Apicbase OAuth Broker: connect libraries, inspect connections, get tokens.",
            epilog="Exit codes: 0 ok, 1 API error, 2 usage, 3 needs reauthorization, 4 not found.",
        ),
        suppress=False,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., output.Result], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(command=handler)
        return sub

    def with_id(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("connection_id", help="your id for the connection (e.g. the library's id)")
        return sub

    connect = with_id(command("connect", cmd_connect, "start connecting a library: prints the URL to open"))
    connect.add_argument("--scopes", nargs="+", help="Apicbase scopes (default: the stack's DefaultScopes)")
    connect.add_argument("--return-url", help="where the callback sends the person afterwards")
    connect.add_argument("--application", help="the application in the secret (default: default)")
    connect.add_argument("--expected-username", help="the Apicbase user who must sign in (anyone else: refused)")
    connect.add_argument("--open", action="store_true", help="open the URL in a browser")

    listing = command("list", cmd_list, "list connections")
    listing.add_argument("--limit", type=int, default=50, choices=range(1, 101), metavar="1..100")
    listing.add_argument("--all", action="store_true", help="follow the pages to the end")

    show = with_id(command("show", cmd_show, "show a connection (never its tokens)"))
    show.add_argument("--introspect", action="store_true", help="also ask Apicbase whether the token is active")

    with_id(command("token", cmd_token, "print a valid access token, alone, on stdout"))
    with_id(command("refresh", cmd_refresh, "refresh a connection now"))

    paste = with_id(command("paste-code", cmd_paste_code, "exchange a code copied from Apicbase (read on stdin)"))
    paste.add_argument("--application", help="the application in the secret (default: default)")
    paste.add_argument("--redirect-uri", help="the redirect URI the code was issued for, if any")

    tokens = with_id(
        command("import-tokens", cmd_import_tokens, "store tokens obtained elsewhere (JSON on stdin or --file)")
    )
    tokens.add_argument("--file", help='JSON file {"access_token", "refresh_token", "expires_in"?}')
    tokens.add_argument("--expires-in", type=int, help="seconds the access token stays valid")
    tokens.add_argument("--application", help="the application in the secret (default: default)")

    disconnect = with_id(command("disconnect", cmd_disconnect, "delete a connection and its tokens"))
    disconnect.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    # Commands on the stack's AWS resources rather than its API, in modules of their own.
    from . import credentials, doctor  # noqa: PLC0415 (they import this module's names)

    credentials.add_command(command)
    doctor.add_command(command)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
