"""A local OAuth 2.0 authorization server that behaves like Apicbase (django-oauth-toolkit).

For the local run, the demo and end-to-end tests::

    SANDBOX_CLIENT_SECRET=S python -m local.sandbox --port 8000 --client-id ID --redirect-uri URL

prints ``sandbox listening on http://127.0.0.1:8000`` when ready (``--port 0`` picks a free
port), exits 2 with one line on stderr if it cannot listen, and exits 0 on SIGTERM or SIGINT.
From Python (Django settings are process-global: one Sandbox per process, started once)::

    from local.sandbox import Sandbox
    with Sandbox("127.0.0.1", 0, "id", "secret", "http://127.0.0.1:3000/oauth/callback") as sandbox:
        ...  # sandbox.url

Apicbase's paths: ``/oauth/authorize/``, ``/oauth/token/``, ``/oauth/introspect/``,
``/oauth/revoke_token/`` (RFC 7009) and a protected ``GET /api/v2/accounts/user_info/``; the
demo user logs in at ``/accounts/login/``. Codes live 60 s, access tokens a week, refresh
tokens never expire and rotate on each use. Switches (``--help``, ``local.sandbox_switches``)
turn on reuse protection, a grace period, a slow or odd token answer and a rate limit.

Test hooks, served only with ``--test-hooks`` (``test_hooks=True``):
``POST /sandbox/revoke/`` revokes every token of the demo user; ``GET /sandbox/stats/`` counts
``token_requests`` (every POST to the token endpoint, refreshes included), ``refresh_requests``,
``introspections``, ``revocations``, ``reused_refresh_tokens`` (refresh tokens presented a
second time) and ``throttled`` (429s) since the process started;
``POST /sandbox/expire-access-tokens/`` sets every access token's expiry in the past;
``GET /sandbox/switches/`` shows the switches and ``POST`` of a JSON object changes
``token_delay``, ``odd_2xx`` and ``rate_limit`` while running.
"""

from local.sandbox.server import SCOPES, Sandbox

__all__ = ["SCOPES", "Sandbox"]
