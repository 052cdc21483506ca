"""A client of the Apicbase OAuth Broker for integrators' services (outside Lambda too).

    from apicbase_broker import BrokerClient

    client = BrokerClient.from_env()  # $APICBASE_BROKER_API_URL, or BrokerClient(api_url)
    api = client.apicbase("lib-42")   # a requests.Session through the broker's proxy
    products = list(api.paginate("api/v2/products/", params={"page_size": 200}))

``client.token("lib-42")`` gives the access token itself, cached in the process. Errors:
``NeedsReauthorization``, ``ConnectionNotFound``, ``Busy`` (``retry_after``) and its
``RateLimited``, all ``BrokerError``.
"""

from .client import ApicbaseSession, BrokerClient
from .errors import BrokerError, Busy, ConfigurationError, ConnectionNotFound, NeedsReauthorization, RateLimited
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
    "RateLimited",
]
