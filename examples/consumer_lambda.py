"""An integrator's Lambda function that calls the Apicbase API with a token from the broker.

Deploy it with the broker's layer attached and two variables: ``APICBASE_BROKER_API_URL`` (the
broker stack's ``ApiUrl`` output) and ``APICBASE_CONNECTION_ID`` naming the library to read. Its role
needs execute-api:Invoke on the broker's token routes and nothing else: the policy is in the
README ("Lambda functions of your own"), and tests/unit/test_consumer.py checks that it is
enough. On a 401 it asks for a fresh token once and retries once: a token can be revoked or
rotated before its expiry.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from apicbase_oauth import get_access_token

API_BASE = os.environ.get("APICBASE_API_BASE", "https://api.apicbase.com/api/v2")
TIMEOUT_SECONDS = 20


def call_apicbase(connection_id: str, path: str, *, params: dict[str, str] | None = None) -> Any:
    url = f"{API_BASE}{path}"
    token = get_access_token(connection_id)
    response = requests.get(url, params=params, headers=_auth(token), timeout=TIMEOUT_SECONDS)
    if response.status_code == 401:
        token = get_access_token(connection_id, rejected_token=token)
        response = requests.get(url, params=params, headers=_auth(token), timeout=TIMEOUT_SECONDS)
    response.raise_for_status()
    return response.json()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    """Lists the library's recipes (``{"path": ...}`` in the event reads another resource)."""
    return call_apicbase(os.environ["APICBASE_CONNECTION_ID"], event.get("path", "/products/recipes/"))
