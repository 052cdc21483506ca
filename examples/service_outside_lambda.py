"""A service outside Lambda (a cron job, a Django app) that calls Apicbase through the broker.

    pip install 'apicbase-oauth-broker @ git+https://github.com/<you>/apicbase-oauth-broker'
    AWS_PROFILE=... python examples/service_outside_lambda.py lib-42 lib-7

Its AWS identity needs ``execute-api:Invoke`` on the broker's API and, for ``from_stack``,
``cloudformation:DescribeStacks`` on the stack (or pass the ``ApiUrl`` output to
``BrokerClient(api_url)`` and skip the lookup). No Apicbase token reaches this process: the
broker adds it, refreshes it on a 401 and keeps to Apicbase's 100 requests per minute.

In Django, build the client once per process (e.g. in ``AppConfig.ready`` or a module global)
and use it from any thread; its sessions are cheap::

    BROKER = BrokerClient.from_stack(settings.APICBASE_BROKER_STACK)

    def products(request, library_id):
        return JsonResponse(BROKER.apicbase(library_id).get("api/v2/products/").json())
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from apicbase_broker import BrokerClient, Busy, ConnectionNotFound, NeedsReauthorization

STACK = "apicbase-oauth-broker"
log = logging.getLogger("apicbase-sync")


def products(client: BrokerClient, connection_id: str) -> Iterator[dict[str, Any]]:
    """Every product of the library, page by page (Apicbase's ``next`` links go through the broker too)."""
    api = client.apicbase(connection_id)
    url: str | None = "api/v2/products/"
    while url:
        answer = api.get(url)
        answer.raise_for_status()  # Apicbase's own errors (403 scope, 429) come back as responses
        page = answer.json()
        yield from page.get("results", [])
        url = page.get("next")


def sync(client: BrokerClient, connection_id: str) -> None:
    for attempt in range(2):
        try:
            count = sum(1 for _ in products(client, connection_id))
        except Busy as exc:  # a refresh in flight, or throttled: once more, after the broker's hint
            if attempt:
                raise
            time.sleep(exc.retry_after or 5)
            continue
        log.info("library %s: %d products", connection_id, count)
        return


def main(connection_ids: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    client = BrokerClient.from_stack(STACK)
    failed = 0
    for connection_id in connection_ids:
        try:
            sync(client, connection_id)
        except NeedsReauthorization:
            # Someone must connect the library again: apicbase-broker connect <id>
            log.warning("library %s needs to be connected again", connection_id)
            failed += 1
        except ConnectionNotFound:
            log.warning("library %s was never connected", connection_id)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
