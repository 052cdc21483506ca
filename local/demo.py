"""python -m local.demo: start the local stack headless and walk the whole flow with the sandbox.

Every step prints one line; the exit code is 1 if any step fails. Token values are never
printed: a token shows as ``sha256:`` and the first 8 hex digits of its hash.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local.browser import browser_session, open_connect_url
from local.run import CONNECTION_ID, fail, load_stack_module, parse_args, python_problem
from local.sandbox.browserless import authorize_as

TIMEOUT = 30
TOKEN_FIELDS = ("access_token", "refresh_token")


class StepFailed(Exception):
    pass


def fingerprint(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


@dataclass
class Walk:
    """The flow, step by step, against a started stack; steps share what they learnt here."""

    stack: Any
    http: Any
    state: dict[str, Any] = field(default_factory=dict)

    def call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        response = self.http.request(method, self.stack.url + path, timeout=TIMEOUT, **kwargs)
        if response.status_code != expected:
            raise StepFailed(
                f"{method} {path} answered {response.status_code}, expected {expected}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def sandbox_stats(self) -> dict[str, int]:
        response = self.http.get(f"{self.stack.sandbox_url}/sandbox/stats/", timeout=TIMEOUT)
        response.raise_for_status()
        return dict(response.json())

    def sandbox_introspect(self, token: str) -> dict[str, Any]:
        """Ask the sandbox directly, as the application that owns the token."""
        response = self.http.post(
            f"{self.stack.sandbox_url}/oauth/introspect/",
            data={"token": token, "client_id": self.stack.client_id, "client_secret": self.stack.client_secret},
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        return dict(response.json())

    def token(self) -> dict[str, Any]:
        token = self.call("GET", f"/connections/{CONNECTION_ID}/token", 200)
        expect(bool(token.get("access_token")), "no access token in the answer")
        return dict(token)

    # --- the steps -------------------------------------------------------------------------------
    def create_connect_session(self) -> str:
        session = self.call("POST", "/connect-sessions", 201, json={"connection_id": CONNECTION_ID})
        expect(session["connect_url"].startswith(self.stack.url + "/oauth/start?"), "connect_url is not the broker's")
        # Opened as a browser would: the binder cookie is kept, and the callback requires it.
        authorize_url = open_connect_url(self.http, session["connect_url"])
        expect(authorize_url.startswith(self.stack.sandbox_url), "connect_url does not lead to the sandbox")
        self.state["authorize_url"] = authorize_url
        return f"connect session for {CONNECTION_ID!r} created (state valid until {session['expires_at']})"

    def log_in_and_consent(self) -> str:
        location = authorize_as(self.stack.sandbox_url, self.state["authorize_url"])
        expect(location.startswith(self.stack.callback_url + "?"), "the sandbox did not redirect to the callback")
        self.state["callback"] = location
        return "logged in to the sandbox as demo and consented; redirected to the callback"

    def follow_redirect(self) -> str:
        page = self.http.get(self.state["callback"], timeout=TIMEOUT, allow_redirects=False)
        expect(page.status_code == 200, f"callback answered {page.status_code}")
        expect("Apicbase connected" in page.text, "the callback page does not say 'Apicbase connected'")
        expect(page.headers.get("Cache-Control") == "no-store", "the callback page may be cached")
        return "callback page says 'Apicbase connected'"

    def show_connection(self) -> str:
        view = self.call("GET", f"/connections/{CONNECTION_ID}", 200)
        expect(not set(TOKEN_FIELDS) & set(view), "the connection view shows tokens")
        expect(view["status"] == "active", f"status is {view['status']}")
        shown = ", ".join(f"{k}={view[k]}" for k in ("status", "username", "scope", "expires_at", "version"))
        return f"stored connection: {shown} (no token values in the view)"

    def get_token(self) -> str:
        token = self.token()
        self.state["access_token"] = token["access_token"]
        return f"token returned: expires_at={token['expires_at']}, {fingerprint(token['access_token'])}"

    def force_refresh(self) -> str:
        before = self.sandbox_stats()["refresh_requests"]
        view = self.call("POST", f"/connections/{CONNECTION_ID}/refresh", 200)
        expect(view["outcome"] == "refreshed", f"outcome {view['outcome']}")
        expect(self.sandbox_stats()["refresh_requests"] == before + 1, "the sandbox did not see one refresh")
        old, new = self.state["access_token"], self.token()["access_token"]
        expect(new != old, "the access token did not change")
        self.state["access_token"] = new
        return f"forced refresh: new access token {fingerprint(new)} (was {fingerprint(old)}), refresh_count=1"

    def show_rotation(self) -> str:
        # The API never shows refresh tokens, so prove rotation by what the sandbox does: it
        # revoked the old pair (the old access token is no longer active), and a second refresh
        # succeeds only if the broker stored the rotated refresh token (used ones are revoked).
        old_token = self.state["access_token"]
        view = self.call("POST", f"/connections/{CONNECTION_ID}/refresh", 200)
        expect(view["outcome"] == "refreshed", f"second refresh: outcome {view['outcome']}")
        expect(view["refresh_count"] == 2, f"refresh_count is {view['refresh_count']}")
        expect(self.sandbox_introspect(old_token) == {"active": False}, "the sandbox still accepts the old token")
        return (
            "refresh token rotated: the sandbox revoked the previous pair (old access token inactive) and "
            "accepted a second refresh, which works only with the rotated refresh token the broker stored"
        )

    def introspect(self) -> str:
        view = self.call("GET", f"/connections/{CONNECTION_ID}?introspect=true", 200)
        result = view["introspection"]
        expect(result["active"] is True, "introspection says inactive")
        return f"introspection: active={result['active']}, username={result['username']}, scope={result['scope']}"

    def call_apicbase(self) -> str:
        answer = self.call("GET", f"/connections/{CONNECTION_ID}/apicbase/api/v1/me/", 200)
        expect(answer.get("username") == "demo", "the sandbox's API did not answer for demo")
        return "Apicbase's API through the broker (proxy route, request budget spent): answered for demo"

    def disconnect(self) -> str:
        answer = self.call("DELETE", f"/connections/{CONNECTION_ID}", 200)
        self.call("GET", f"/connections/{CONNECTION_ID}", 404)
        # The tokens are gone whatever Apicbase's revocation endpoint said; the answer records it.
        expect(answer["revocation"] in {"revoked", "failed", "not_configured"}, "DELETE did not record revocation")
        return f"disconnected: the connection is gone (404); revocation at the sandbox: {answer['revocation']}"

    def no_call_refused(self) -> str:
        refused = self.stack.iam_refused
        expect(refused == 0, f"{refused} AWS call(s) refused by the functions' roles (the 'IAM refused' lines above)")
        return "IAM: every AWS call of the walk was allowed by its function's own role in template.yaml (0 refused)"

    def steps(self) -> list[Callable[[], str]]:
        return [
            self.create_connect_session,
            self.log_in_and_consent,
            self.follow_redirect,
            self.show_connection,
            self.get_token,
            self.force_refresh,
            self.show_rotation,
            self.introspect,
            self.call_apicbase,
            self.disconnect,
            self.no_call_refused,
        ]


def walk(stack: Any) -> bool:
    with browser_session() as http:
        for step in Walk(stack, http).steps():
            try:
                line = step()
            except Exception as exc:  # report and stop: later steps depend on this one
                print(f"✗ {step.__name__.replace('_', ' ')}: {type(exc).__name__}: {exc}", flush=True)
                return False
            print(f"✓ {line}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parse_args(argv, "python -m local.demo", __doc__ or "")
    problem = python_problem()
    if problem:
        return fail(problem)
    stack_module = load_stack_module()
    started = time.monotonic()
    # Free ports, the sandbox's test hooks (its request counters) and quiet handlers.
    config = stack_module.Config(port=0, moto_port=0, sandbox_port=0, sandbox_test_hooks=True, log_level="WARNING")
    try:
        with stack_module.Stack(config, log_requests=False) as stack:
            print(f"✓ local stack started in {time.monotonic() - started:.1f} s: broker {stack.url}", flush=True)
            walked = time.monotonic()
            passed = walk(stack)
    except stack_module.StartupError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    if not passed:
        print("demo FAILED", flush=True)
        return 1
    print(f"demo passed: the whole flow in {time.monotonic() - walked:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
