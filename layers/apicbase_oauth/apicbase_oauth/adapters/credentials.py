"""Client credentials: one Secrets Manager secret holding named Apicbase applications.

``{"default": {"client_id": "...", "client_secret": "..."}, "sandbox": {...}}``, read with one
GetSecretValue and kept per container for ``max_age`` seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigurationError, DependencyUnavailable, UnknownApplication
from .apicbase import ClientCredentials

PLACEHOLDER = "SET-ME"


class CredentialStore:
    def __init__(
        self, secrets: Any, secret_id: str, *, max_age: int = 300, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.secrets = secrets  # a Secrets Manager client
        self.secret_id = secret_id
        self.max_age = max_age
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None  # (read at, the secret's object)

    def get(self, application: str, *, force_fetch: bool = False) -> ClientCredentials:
        """Credentials of one application; ``force_fetch`` bypasses the cache (after invalid_client)."""
        applications = self._read(force_fetch)
        entry = applications.get(application)
        if not isinstance(entry, dict):
            raise UnknownApplication(f"application {application!r} is not in the client-credentials secret")
        client_id = entry.get("client_id")
        client_secret = entry.get("client_secret")
        if not all(isinstance(v, str) and v.strip() and v != PLACEHOLDER for v in (client_id, client_secret)):
            raise ConfigurationError(
                f"client_id and client_secret of application {application!r} are not set "
                f"in the secret {self.secret_id}; put them there (see README)",
                code="credentials_not_configured",
            )
        assert isinstance(client_id, str) and isinstance(client_secret, str)
        return ClientCredentials(application=application, client_id=client_id.strip(), client_secret=client_secret)

    def _read(self, force_fetch: bool) -> dict[str, Any]:
        now = self._clock()
        if self._cached is not None and not force_fetch and now - self._cached[0] < self.max_age:
            return self._cached[1]
        try:
            answer = self.secrets.get_secret_value(SecretId=self.secret_id)
        except (ClientError, BotoCoreError):
            raise DependencyUnavailable("Secrets Manager could not be read") from None
        try:
            value = json.loads(answer.get("SecretString") or answer.get("SecretBinary") or "")
        except (ValueError, RecursionError):
            raise ConfigurationError(f"the client-credentials secret {self.secret_id} is not valid JSON") from None
        if not isinstance(value, dict):
            raise ConfigurationError(f"the client-credentials secret {self.secret_id} is not a JSON object")
        self._cached = (now, value)
        return value
