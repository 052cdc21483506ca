"""python -m bench.webhook: how long a connection event takes, in the local run, from the change
(the API's answer, which comes after the write) to the webhook receiving it: the stream poll, the
events function (its own worker process), PutEvents on moto, the rule's target and the delivery.

One ``python -m local.run`` (as the e2e suite starts it) with a webhook on 127.0.0.1; ``--rounds``
connections are connected (Connection Created), then their grant is revoked at the sandbox and
each is refreshed (Reauthorization Required). The first round pays the events function's cold start.

    python -m bench.webhook [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.localrun import LocalRun
from tests.e2e.webhook import API_KEY, WebhookReceiver

WITHIN_SECONDS = 30


def _summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (
        f"{name:<44} first {seconds[0] * 1000:6.0f} ms   "
        f"median {statistics.median(ms):6.0f} ms   p90 {p90:6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    receiver = WebhookReceiver()
    run = LocalRun(Path(tempfile.mkdtemp()) / "local-run.log", WEBHOOK_URL=receiver.url, WEBHOOK_API_KEY=API_KEY)
    created: list[float] = []
    required: list[float] = []
    try:
        run.wait_ready()
        ids = [f"bench-webhook-{n}" for n in range(args.rounds)]
        for connection_id in ids:
            run.connect(connection_id)
            answered = time.monotonic()
            delivery = receiver.wait_for("Apicbase Connection Created", connection_id, within=WITHIN_SECONDS)
            created.append(delivery.arrived - answered)
        run.sandbox_hook("revoke")
        for connection_id in ids:
            refused = run.api("POST", f"/connections/{connection_id}/refresh")
            answered = time.monotonic()
            assert refused.status_code == 409, refused.text
            delivery = receiver.wait_for(
                "Apicbase Connection Reauthorization Required", connection_id, within=WITHIN_SECONDS
            )
            required.append(delivery.arrived - answered)
    finally:
        run.stop()
        receiver.stop()
    print("From the API's answer to the webhook's receipt (local run, this machine):")
    print(_summary("Connection Created (after the callback)", created))
    print(_summary("Reauthorization Required (after a refresh)", required))
    return 0


if __name__ == "__main__":
    sys.exit(main())
