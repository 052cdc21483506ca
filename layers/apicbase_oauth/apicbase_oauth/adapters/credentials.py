"""Client credentials: one Secrets Manager secret holding named Apicbase applications.

``{"default": {"client_id": "...", "client_secret": "..."}, "sandbox": {...}}``, read with
Powertools parameters (cached per container for ``max_age`` seconds).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from ..errors import ConfigurationError, DependencyUnavailable, UnknownApplication
from .apicbase import ClientCredentials

PLACEHOLDER = "SET-ME"


class CredentialStore:
    def __init__(self, secret_id: str, *, max_age: int = 300) -> None:
        self.secret_id = secret_id
        self.max_age = max_age

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
        try:
            value = parameters.get_secret(
                self.secret_id, transform="json", max_age=self.max_age, force_fetch=force_fetch
            )
        except TransformParameterError:
            raise ConfigurationError(f"the client-credentials secret {self.secret_id} is not valid JSON") from None
        except GetParameterError:
            raise DependencyUnavailable("Secrets Manager could not be read") from None
        if not isinstance(value, dict):
            raise ConfigurationError(f"the client-credentials secret {self.secret_id} is not a JSON object")
        return value
