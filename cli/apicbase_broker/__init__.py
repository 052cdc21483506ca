"""A client of the Apicbase OAuth Broker for integrators' services (outside Lambda too).

    from apicbase_broker import BrokerClient

    client = BrokerClient.from_stack("apicbase-oauth-broker")   # or BrokerClient(api_url)
    api = client.apicbase("lib-42")                              # a requests.Session
    products = api.get("api/v2/products/").json()

``client.token("lib-42")`` gives the access token itself, cached in the process. Errors:
``NeedsReauthorization``, ``ConnectionNotFound``, ``Busy`` (``retry_after``), all ``BrokerError``.
"""

from .client import ApicbaseSession, BrokerClient
from .errors import BrokerError, Busy, ConfigurationError, ConnectionNotFound, NeedsReauthorization
from .signing import ExecuteApiAuth

__all__ = [
    "ApicbaseSession",
    "BrokerClient",
    "BrokerError",
    "Busy",
    "ConfigurationError",
    "ConnectionNotFound",
    "ExecuteApiAuth",
    "NeedsReauthorization",
]
