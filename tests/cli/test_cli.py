"""apicbase-broker against the admin API's handler (served on 127.0.0.1, unsigned like the local run)."""

from __future__ import annotations

import argparse
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from local.browser import browser_session, open_connect_url

from apicbase_broker_cli.main import _parser, main
from tests import fakes
from tests.conftest import CALLBACK_URL

CALLBACK_ORIGIN = CALLBACK_URL.removesuffix("/oauth/callback")


def imported(cli, apicbase, connection_id: str = "lib-1") -> tuple[str, str]:
    """Given a connection made by importing a fresh pair through the CLI."""
    access, refresh = apicbase.issue_pair()
    run = cli("import-tokens", connection_id, stdin=json.dumps({"access_token": access, "refresh_token": refresh}))
    assert run.code == 0, run.err
    return access, refresh


def test_connect_prints_the_connect_url_that_the_callback_then_completes(cli, broker, apicbase):
    # When an operator starts connecting lib-7
    run = cli("connect", "lib-7", "--scopes", "accounts", "library")
    # Then the URL to open is printed: the broker's connect_url
    assert run.code == 0
    connect_url = next(line for line in run.out.splitlines() if line.startswith(f"{CALLBACK_ORIGIN}/oauth/start?"))
    # And a browser that opens it (here on 127.0.0.1) is sent to Apicbase with a state
    with browser_session() as browser:
        authorize_url = open_connect_url(browser, connect_url.replace(CALLBACK_ORIGIN, broker.url))
        assert authorize_url.startswith(fakes.AUTHORIZE_URL)
        state = parse_qs(urlsplit(authorize_url).query)["state"][0]
        # And when Apicbase redirects that browser back with a code, the connection is active
        answer = browser.get(f"{broker.url}/oauth/callback?code={apicbase.issue_code()}&state={state}", timeout=30)
        assert answer.status_code == 200
    assert json.loads(cli("--json", "show", "lib-7").out)["status"] == "active"


def test_connect_json_gives_the_connect_url_and_neither_state_nor_authorize_url(cli):
    # When connect runs with --json
    run = cli("--json", "connect", "lib-1", "--expected-username", "chef@example.com")
    # Then scripts get the connect_url only: the state stays inside the broker
    session = json.loads(run.out)
    assert run.code == 0
    assert session["connect_url"].startswith(f"{CALLBACK_ORIGIN}/oauth/start?session=")
    assert (session["connection_id"], session["expected_username"]) == ("lib-1", "chef@example.com")
    assert not {"state", "authorize_url"} & set(session)


def test_import_tokens_then_show_never_prints_a_token(cli, apicbase):
    # Given tokens imported from stdin
    access, refresh = imported(cli, apicbase)
    # When the connection is shown
    run = cli("show", "lib-1")
    # Then its fields are listed, without either token
    assert run.code == 0
    assert "status" in run.out and "active" in run.out
    assert access not in run.out + run.err and refresh not in run.out + run.err


def test_import_tokens_reads_a_json_file(cli, apicbase, tmp_path):
    # Given a JSON file with a pair
    access, refresh = apicbase.issue_pair()
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"access_token": access, "refresh_token": refresh}))
    # When it is imported with --file and --expires-in
    run = cli("--json", "import-tokens", "lib-2", "--file", str(path), "--expires-in", "3600")
    # Then the connection is stored with the source "import"
    assert run.code == 0
    assert json.loads(run.out)["source"] == "import"


def test_import_tokens_without_a_refresh_token_is_a_usage_error(offline_cli):
    # When the JSON on stdin lacks the refresh token
    run = offline_cli("import-tokens", "lib-1", stdin='{"access_token": "a"}')
    # Then nothing is sent and the exit code is 2
    assert run.code == 2
    assert "refresh_token" in run.err


def test_list_shows_a_table_and_json(cli, apicbase):
    # Given two connections
    imported(cli, apicbase, "lib-a")
    imported(cli, apicbase, "lib-b")
    # When they are listed, as a table and as JSON
    table = cli("list")
    document = cli("--json", "list", "--all")
    # Then the table has a header and one row each, and the JSON the same ids
    lines = table.out.splitlines()
    assert lines[0].split()[:2] == ["CONNECTION_ID", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["lib-a", "lib-b"]
    assert [c["connection_id"] for c in json.loads(document.out)["connections"]] == ["lib-a", "lib-b"]


def test_list_follows_every_page_with_all(cli, apicbase):
    # Given three connections and pages of one
    for name in ("lib-a", "lib-b", "lib-c"):
        imported(cli, apicbase, name)
    # When listed with --all
    run = cli("--json", "list", "--limit", "1", "--all")
    # Then all three come back and there is no cursor left
    document = json.loads(run.out)
    assert [c["connection_id"] for c in document["connections"]] == ["lib-a", "lib-b", "lib-c"]
    assert document["next_cursor"] is None


def test_token_prints_the_access_token_alone(cli, apicbase):
    # Given a connection
    access, refresh = imported(cli, apicbase)
    # When its token is asked for
    run = cli("token", "lib-1")
    # Then stdout is the access token and a newline, nothing else, and never the refresh token
    assert run.code == 0
    assert run.out == f"{access}\n"
    assert refresh not in run.out + run.err


def test_refresh_shows_the_outcome_without_tokens(cli, apicbase):
    # Given a connection
    imported(cli, apicbase)
    # When it is refreshed now
    run = cli("refresh", "lib-1")
    # Then Apicbase was asked once and the output names the outcome and no token
    assert run.code == 0
    assert apicbase.refresh_requests == 1
    assert "refreshed" in run.out
    assert not any(token in run.out for token in apicbase.issued_refresh_tokens)


def test_show_introspect_asks_apicbase(cli, apicbase):
    # Given a connection
    imported(cli, apicbase)
    # When it is shown with --introspect
    run = cli("show", "lib-1", "--introspect")
    # Then Apicbase's view is included
    assert run.code == 0
    assert "introspection.active" in run.out and "True" in run.out


def test_paste_code_exchanges_a_code_read_from_stdin(cli, apicbase):
    # Given a code a person copied from Apicbase's page
    code = apicbase.issue_code()
    # When it is piped to paste-code
    run = cli("--json", "paste-code", "lib-9", stdin=code + "\n")
    # Then the connection is stored from the pasted code, and the code is not echoed
    assert run.code == 0
    assert json.loads(run.out)["source"] == "pasted_code"
    assert code not in run.out + run.err


def test_paste_code_with_a_used_code_exits_3_and_says_to_reconnect(cli, apicbase):
    # Given a code that was already exchanged
    code = apicbase.issue_code()
    cli("paste-code", "lib-9", stdin=code)
    # When it is pasted again
    run = cli("paste-code", "lib-9", stdin=code)
    # Then exit code 3 and one line that says what to do
    assert run.code == 3
    assert run.err.count("\n") == 1
    assert "apicbase-broker connect lib-9" in run.err


def test_a_revoked_connection_exits_3_on_refresh(cli, apicbase):
    # Given a connection whose grant Apicbase revoked
    imported(cli, apicbase)
    apicbase.revoke_all()
    # When it is refreshed
    run = cli("refresh", "lib-1")
    # Then exit code 3, and the hint names the command to reconnect
    assert run.code == 3
    assert "needs_reauthorization" in run.err
    assert "apicbase-broker connect lib-1" in run.err


def test_show_of_an_unknown_connection_exits_4(cli):
    # When a connection that does not exist is shown
    run = cli("show", "nope")
    # Then exit code 4 and a hint to list connections
    assert run.code == 4
    assert "apicbase-broker list" in run.err


def test_errors_are_also_json_on_stdout_with_json(cli):
    # When a failing command runs with --json
    run = cli("--json", "token", "nope")
    # Then stdout carries the error document for scripts
    assert run.code == 4
    assert json.loads(run.out)["error"]["code"] == "connection_not_found"


def test_disconnect_needs_yes_when_not_interactive(cli, apicbase):
    # Given a connection
    imported(cli, apicbase)
    # When disconnect runs without --yes and without a terminal
    run = cli("disconnect", "lib-1")
    # Then nothing is deleted and the exit code is 2
    assert run.code == 2
    assert cli("show", "lib-1").code == 0


def test_disconnect_with_yes_deletes_the_connection(cli, apicbase):
    # Given a connection
    imported(cli, apicbase)
    # When it is disconnected with --yes
    run = cli("disconnect", "lib-1", "--yes")
    # Then it is gone, and its refresh token was revoked at Apicbase
    assert run.code == 0
    assert "revoked at Apicbase" in run.out
    assert apicbase.revocations == 1 and apicbase.live_refresh_tokens == set()
    assert cli("show", "lib-1").code == 4


@pytest.mark.parametrize("args", [["list", "--limit", "0"], ["show"], ["nonsense"]])
def test_bad_arguments_exit_2(offline_cli, args):
    # When the arguments are wrong, Then the exit code is 2
    assert offline_cli(*args).code == 2


@pytest.mark.parametrize("scopes", [["accounts library"], ["accounts,library"], ["accounts", "library"]])
def test_scopes_may_be_one_argument_as_the_readme_writes_them(cli, scopes):
    # When connect names its scopes in one argument, comma-separated, or apart
    run = cli("--json", "connect", "lib-1", "--scopes", *scopes)
    # Then the session asks for both
    assert run.code == 0, run.err
    assert json.loads(run.out)["scopes"] == ["accounts", "library"]


def test_a_request_the_api_refuses_exits_2_and_says_what_to_change(cli):
    # When connect asks for a scope Apicbase does not have
    run = cli("connect", "lib-1", "--scopes", "accounts", "kitchen")
    # Then exit code 2, one line: the API's reason, and where the options are explained
    assert run.code == 2
    assert run.err.count("\n") == 1
    assert "unknown scope(s) kitchen" in run.err
    assert "apicbase-broker connect --help" in run.err


def test_an_unknown_application_exits_2_with_the_option_to_change(cli):
    run = cli("connect", "lib-1", "--application", "nope")
    assert run.code == 2
    assert "--application" in run.err


def test_a_missing_file_is_named(offline_cli, tmp_path):
    # When import-tokens is given a file that does not exist
    run = offline_cli("import-tokens", "lib-1", "--file", str(tmp_path / "missing.json"))
    # Then exit code 2 and one line naming the file and why
    assert run.code == 2
    assert run.err.count("\n") == 1
    assert "missing.json" in run.err and "No such file" in run.err


def test_reconnect_hints_do_not_repeat_the_message(cli, apicbase):
    # Given a revoked connection, and a code used once already
    imported(cli, apicbase)
    apicbase.revoke_all()
    code = apicbase.issue_code()
    cli("paste-code", "lib-9", stdin=code)
    # When each fails, Then the line says "again" and "expired" once each
    revoked = cli("refresh", "lib-1").err
    reused = cli("paste-code", "lib-9", stdin=code).err
    assert revoked.count("again") == 1
    assert (reused.count("expired"), reused.count("again")) == (1, 1)


def test_every_command_s_help_shows_an_example(capsys):
    # Given every command of the CLI
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(commands) == 10
    for name in commands:
        # When its --help is read, Then it shows how to run it
        assert main([name, "--help"]) == 0
        assert f"example:\n  apicbase-broker {name}" in capsys.readouterr().out
