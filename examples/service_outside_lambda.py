"""A service outside Lambda (a cron job, a Django app) that reads Apicbase through the broker.

    pip install ./                                          # in a clone of this repository
    export APICBASE_BROKER_API_URL=http://127.0.0.1:3000    # make run; deployed: the stack's ApiUrl output
    python examples/service_outside_lambda.py lib-42 lib-7

Against a deployed broker its AWS identity needs ``execute-api:Invoke`` on the broker's API (and,
with ``APICBASE_BROKER_STACK`` instead of the URL, ``cloudformation:DescribeStacks`` on the stack);
the local run needs no AWS credentials. No Apicbase token reaches this process: the broker adds
it, refreshes it on a 401 and keeps to Apicbase's 100 requests per minute, and ``paginate`` waits
out a 429 when it meets one.

Apicbase asks integrators to poll for changes rather than read everything each time: pass the
newest ``modified_date`` seen as ``--since`` (``modified_date__gt``).

In Django, build the client once per process (e.g. in ``AppConfig.ready`` or a module global)
and use it from any thread; its sessions are cheap::

    BROKER = BrokerClient.from_env()

    def products(request, library_id):
        page = BROKER.apicbase(library_id).get("api/v2/products/", params={"page_size": 200})
        return JsonResponse(page.json())
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from apicbase_broker import BrokerClient, Busy, ConnectionNotFound, NeedsReauthorization

log = logging.getLogger("apicbase-sync")


def products(client: BrokerClient, connection_id: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """Every product of the library (modified after ``since``), 200 to a page, through the broker."""
    params = {"page_size": 200, **({"modified_date__gt": since} if since else {})}
    return client.apicbase(connection_id).paginate("api/v2/products/", params=params)


def sync(client: BrokerClient, connection_id: str, since: str | None = None) -> int:
    try:
        count = sum(1 for _ in products(client, connection_id, since))
    except Busy as exc:  # a refresh in flight, or still throttled: once more, after the broker's hint
        time.sleep(exc.retry_after or 5)
        count = sum(1 for _ in products(client, connection_id, since))
    log.info("library %s: %d products", connection_id, count)
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count each library's products, read through the broker.")
    parser.add_argument("connection_ids", nargs="+", metavar="CONNECTION_ID")
    parser.add_argument("--since", help="only products modified after this ISO 8601 date-time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    client = BrokerClient.from_env()  # APICBASE_BROKER_API_URL, or APICBASE_BROKER_STACK
    failed = 0
    for connection_id in args.connection_ids:
        try:
            sync(client, connection_id, args.since)
        except NeedsReauthorization:
            # Someone must connect the library again: apicbase-broker connect <id>
            log.warning("library %s needs to be connected again", connection_id)
            failed += 1
        except ConnectionNotFound:
            log.warning("library %s was never connected", connection_id)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
