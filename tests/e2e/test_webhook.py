"""Connection events reach an integrator's webhook from the local run, as EventBridge's API
destination delivers them on AWS: the event as published, with the x-api-key header."""

from __future__ import annotations

import pytest

from tests.e2e.localrun import LocalRun
from tests.e2e.webhook import API_KEY, WebhookReceiver

pytestmark = pytest.mark.e2e

WITHIN_SECONDS = 10
CREATED = "Apicbase Connection Created"
REAUTHORIZATION_REQUIRED = "Apicbase Connection Reauthorization Required"


def test_a_connect_then_a_revoked_grant_reach_the_webhook_within_seconds(
    local_run: LocalRun, webhook: WebhookReceiver
) -> None:
    # Given a library connected through the callback
    local_run.connect("e2e-webhook")
    token = local_run.token("e2e-webhook")
    # Then the webhook receives Connection Created, with the API key, within seconds
    created = webhook.wait_for(CREATED, "e2e-webhook", within=WITHIN_SECONDS)

    # When Apicbase revokes the grant and the broker refreshes the connection
    local_run.sandbox_hook("revoke")
    refreshed = local_run.api("POST", "/connections/e2e-webhook/refresh")
    assert refreshed.status_code == 409, refreshed.text
    # Then the webhook receives Reauthorization Required, with the API key, within seconds
    required = webhook.wait_for(REAUTHORIZATION_REQUIRED, "e2e-webhook", within=WITHIN_SECONDS)

    for delivery in (created, required):
        assert delivery.headers["x-api-key"] == API_KEY
        assert delivery.headers["content-type"].startswith("application/json")
        # The EventBridge event as published, with the stable id to deduplicate on
        assert {"version", "id", "detail-type", "source", "time", "detail"} <= set(delivery.event)
        assert delivery.event["source"] == "apicbase-oauth-broker.apicbase-oauth-broker"
        assert delivery.event["detail"]["event_id"].endswith((".created", ".reauthorization-required"))
    assert required.event["detail"]["reason"] == "refresh_token_rejected"
    # And each event once per event_id, with no token in any body
    for detail_type in (CREATED, REAUTHORIZATION_REQUIRED):
        assert len({d.event["detail"]["event_id"] for d in webhook.of(detail_type, "e2e-webhook")}) == 1
    assert not any(token in str(d.event) for d in webhook.deliveries)


def test_the_webhook_key_never_reaches_the_logs(local_run: LocalRun, webhook: WebhookReceiver) -> None:
    # Given events delivered to the webhook
    local_run.connect("e2e-webhook-logs")
    webhook.wait_for(CREATED, "e2e-webhook-logs", within=WITHIN_SECONDS)
    # Then the run's output never shows its x-api-key
    assert API_KEY not in local_run.log()
