"""``apicbase-broker``: the operator's command line for the broker's admin API.

Exit codes: 0 ok, 1 the API failed, was busy or could not be reached, 2 usage or configuration
(or a request the API refused: change it and run again), 3 the connection needs to be connected
again, 4 no such connection.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import webbrowser
from collections.abc import Callable, Sequence
from typing import Any

from apicbase_broker import BrokerClient, BrokerError, Busy, ConfigurationError
from apicbase_broker.client import ENV_API_URL, ENV_STACK, connection_path

from . import output

OK, API_FAILED, USAGE, NEEDS_REAUTHORIZATION, NOT_FOUND = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad arguments or configuration (exit code 2)."""


# What to do, by the error's code: an action, never the message again.
HINTS = {
    "needs_reauthorization": "send the library's owner a new link: apicbase-broker connect {id}",
    "connection_not_found": "see the connections that exist: apicbase-broker list",
    "invalid_grant": "run: apicbase-broker connect {id}",
    "invalid_client": "fix the client id/secret in the stack's secret (output SecretArn), then retry",
    "client_mismatch": "put the original application back in the secret, or connect again",
    "unknown_application": "name an application of the stack's secret with --application",
    "refresh_in_progress": "retry in a few seconds",
    "rate_limited": "retry in a minute",
    "apicbase_unavailable": "retry later",
    "dependency_unavailable": "retry in a few seconds",
    "configuration_error": "see the function's logs",
    "forbidden": "check AWS credentials, region and execute-api:Invoke on the API",
    "not_found": "check --api-url: it must be the stack's ApiUrl output",
    "throttled": "retry in a few seconds",
    "unreachable": "check --api-url (or start the local run: make run)",
    "no_api_url": "or pass --api-url or --stack-name",
    "stack_unreadable": "check --stack-name and --region",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return OK if exc.code == 0 else USAGE
    try:
        result = args.command(args, _api(args) if getattr(args, "uses_api", True) else None)
    except UsageError as exc:
        _fail(f"{exc}")
        return USAGE
    except ConfigurationError as exc:
        _fail(f"{exc.message}; {HINTS[exc.code]}" if exc.code in HINTS else exc.message)
        return USAGE
    except BrokerError as exc:
        return _api_failed(args, exc)
    except KeyboardInterrupt:
        return USAGE
    output.emit(result, as_json=args.json)
    return result.exit_code


def _api_failed(args: argparse.Namespace, exc: BrokerError) -> int:
    where = f"HTTP {exc.status}, " if exc.status else ""
    hint = HINTS.get(exc.code)
    if hint is None:
        # A request the API refused: the message says what is wrong with it.
        hint = f"see apicbase-broker {args.name} --help" if 400 <= exc.status < 500 else "see the API's logs"
    _fail(f"{exc.message.rstrip('.')} ({where}{exc.code}); {hint.format(id=getattr(args, 'connection_id', 'ID'))}")
    if args.json:
        print(json.dumps({"error": {"status": exc.status, "code": exc.code, "message": exc.message}}))
    if exc.code in {"needs_reauthorization", "invalid_grant"}:
        return NEEDS_REAUTHORIZATION
    if exc.code == "connection_not_found":
        return NOT_FOUND
    if 400 <= exc.status < 500 and not isinstance(exc, Busy):
        return USAGE
    return API_FAILED


def _fail(message: str) -> None:
    # One line, whatever the server sent (an HTML error page, control characters).
    print(f"apicbase-broker: error: {' '.join(message.split())}", file=sys.stderr)


# --- configuration -------------------------------------------------------------------------------
def _api(args: argparse.Namespace) -> BrokerClient:
    """--api-url, else --stack-name, else APICBASE_BROKER_API_URL, else APICBASE_BROKER_STACK."""
    return BrokerClient.from_env(
        api_url=args.api_url, stack_name=args.stack_name, region=args.region, profile=args.profile
    )


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
    if args.scopes is not None:
        # --scopes "accounts library", --scopes accounts,library and --scopes accounts library alike
        args.scopes = [scope for given in args.scopes for scope in re.split(r"[\s,]+", given) if scope]
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
    source = "stdin" if path is None else path
    try:
        if path is None:
            raw = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                raw = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{source} is not UTF-8 text") from None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not {"access_token", "refresh_token"} <= data.keys():
        raise UsageError(f'{source}: expected JSON like {{"access_token": "...", "refresh_token": "..."}}')
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
            epilog=f"""example:
  export {ENV_API_URL}=http://127.0.0.1:3000   # the local run; or {ENV_STACK}=<your stack's name>
  apicbase-broker list

Exit codes: 0 ok, 1 the API failed or is busy, 2 usage, configuration or a request the API refused,
3 needs reauthorization, 4 no such connection.""",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ),
        suppress=False,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[..., output.Result], help_text: str, *examples: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog="example:\n" + "\n".join(f"  apicbase-broker {example}" for example in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(command=handler, name=name)
        return sub

    def with_id(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("connection_id", help="your id for the connection (e.g. the library's id)")
        return sub

    connect = with_id(
        command(
            "connect",
            cmd_connect,
            "start connecting a library: prints the URL to open",
            'connect lib-42 --scopes "accounts library" --expected-username owner@example.com',
        )
    )
    connect.add_argument(
        "--scopes", nargs="+", help="Apicbase scopes, apart or in one argument (default: the stack's DefaultScopes)"
    )
    connect.add_argument("--return-url", help="where the callback sends the person afterwards")
    connect.add_argument("--application", help="the application in the secret (default: default)")
    connect.add_argument("--expected-username", help="the Apicbase user who must sign in (anyone else: refused)")
    connect.add_argument("--open", action="store_true", help="open the URL in a browser")

    listing = command("list", cmd_list, "list connections", "list --all --json")
    listing.add_argument("--limit", type=int, default=50, choices=range(1, 101), metavar="1..100")
    listing.add_argument("--all", action="store_true", help="follow the pages to the end")

    show = with_id(command("show", cmd_show, "show a connection (never its tokens)", "show lib-42 --introspect"))
    show.add_argument("--introspect", action="store_true", help="also ask Apicbase whether the token is active")

    with_id(
        command(
            "token",
            cmd_token,
            "print a valid access token, alone, on stdout",
            'token lib-42 | sed "s/^/Authorization: Bearer /" | curl -H @- https://api.apicbase.com/api/v2/products/',
        )
    )
    with_id(command("refresh", cmd_refresh, "refresh a connection now", "refresh lib-42"))

    paste = with_id(
        command(
            "paste-code",
            cmd_paste_code,
            "exchange a code copied from Apicbase (read on stdin)",
            "paste-code lib-42          # then paste the code and press Enter",
        )
    )
    paste.add_argument("--application", help="the application in the secret (default: default)")
    paste.add_argument("--redirect-uri", help="the redirect URI the code was issued for, if any")

    tokens = with_id(
        command(
            "import-tokens",
            cmd_import_tokens,
            "store tokens obtained elsewhere (JSON on stdin or --file)",
            "import-tokens lib-42 --file tokens.json",
        )
    )
    tokens.add_argument("--file", help='JSON file {"access_token", "refresh_token", "expires_in"?}')
    tokens.add_argument("--expires-in", type=int, help="seconds the access token stays valid")
    tokens.add_argument("--application", help="the application in the secret (default: default)")

    disconnect = with_id(
        command(
            "disconnect",
            cmd_disconnect,
            "delete a connection and its tokens, and revoke its grant at Apicbase",
            "disconnect lib-42 --yes",
        )
    )
    disconnect.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    # Commands on the stack's AWS resources rather than its API, in modules of their own.
    from . import credentials, doctor  # noqa: PLC0415 (they import this module's names)

    credentials.add_command(command)
    doctor.add_command(command)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
