"""Every EventBridge event the broker emits matches its JSON Schema in docs/events/: each is
triggered through the use cases and taken from what an integrator's rule receives, after the
table's stream went through the events function."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from apicbase_oauth import admin, connect
from apicbase_oauth.adapters import events
from apicbase_oauth.errors import ApicbaseUnavailable, NeedsReauthorization
from tests.binding import open_in_browser
from tests.unit.stream_support import imported

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events"


def load_schemas() -> dict[str, dict]:
    schemas = [json.loads(path.read_text()) for path in SCHEMAS.glob("*.json")]
    return {s["properties"]["detail-type"]["const"]: s for s in schemas}


@pytest.fixture
def emitted(feed, consumer) -> Callable[[], list[dict]]:
    """The events an integrator's rule receives once the stream is delivered (one per event_id)."""

    def delivered() -> list[dict]:
        feed.drain()
        return consumer.deduplicated()

    return delivered


def assert_valid(emitted: Callable[[], list[dict]], detail_type: str) -> dict:
    matching = [e for e in emitted() if e["detail-type"] == detail_type]
    assert matching, f"no {detail_type!r} event was emitted"
    for event in matching:
        jsonschema.validate(event, load_schemas()[detail_type])
    return matching[-1]


def test_every_event_type_the_code_names_has_a_schema():
    # Given the detail types events.py defines, Then each has a schema file
    names = {v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)}
    assert names == set(load_schemas())


def test_schemas_are_valid_draft_2020_12():
    for schema in load_schemas().values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_connection_created_by_the_callback(deps, apicbase, emitted):
    # Given a connect session that Apicbase redirects back to with a code
    state, binder = open_in_browser(deps, "lib-1")
    # When the callback completes
    connect.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    # Then a Created event with source "callback" matches its schema
    event = assert_valid(emitted, events.CONNECTION_CREATED)
    assert event["detail"]["source"] == "callback"
    assert event["detail"]["reconnected"] is False


def test_connection_created_by_a_pasted_code_and_a_reconnect(deps, apicbase, emitted):
    # Given an imported connection
    imported(deps, apicbase)
    # When a pasted code connects the same id again
    connect.exchange_pasted_code(deps, "lib-1", code=apicbase.issue_code())
    # Then both Created events match, the second one a reconnect from a pasted code
    event = assert_valid(emitted, events.CONNECTION_CREATED)
    assert (event["detail"]["source"], event["detail"]["reconnected"]) == ("pasted_code", True)


def test_reauthorization_required(deps, apicbase, emitted):
    # Given a connection whose grant Apicbase revoked
    imported(deps, apicbase)
    apicbase.revoke_all()
    # When it is refreshed
    with pytest.raises(NeedsReauthorization):
        admin.force_refresh(deps, "lib-1")
    # Then a Reauthorization Required event matches its schema
    event = assert_valid(emitted, events.REAUTHORIZATION_REQUIRED)
    assert event["detail"]["reason"] == "refresh_token_rejected"


def warn_after(events_function, failures: int) -> None:
    """FailureWarningThreshold, which the events function reads."""
    settings = events_function.DEPS.settings
    events_function.DEPS.settings = dataclasses.replace(settings, failure_warning_threshold=failures)


def fail_twice(deps, apicbase, events_function) -> None:
    """A warning threshold of 2, and two refreshes in a row that Apicbase fails."""
    warn_after(events_function, 2)
    imported(deps, apicbase)
    apicbase.scripted = [(503, {"error": "temporarily_unavailable"}, {})] * 2
    for _ in range(2):
        with pytest.raises(ApicbaseUnavailable):
            admin.force_refresh(deps, "lib-1")


def test_refresh_failing(deps, apicbase, emitted, events_function):
    # Given a warning threshold of 2, When two refreshes fail in a row
    fail_twice(deps, apicbase, events_function)
    # Then a Refresh Failing event matches its schema
    event = assert_valid(emitted, events.REFRESH_FAILING)
    assert event["detail"]["consecutive_failures"] == 2


def test_disconnected(deps, apicbase, emitted):
    # Given a connection
    imported(deps, apicbase)
    # When it is deleted
    admin.disconnect(deps, "lib-1")
    # Then a Disconnected event matches its schema
    assert assert_valid(emitted, events.CONNECTION_DISCONNECTED)["detail"]["connection_id"] == "lib-1"


def test_recovered_after_refresh_failing(deps, apicbase, emitted, events_function):
    # Given a connection announced as failing (warning threshold 2)
    fail_twice(deps, apicbase, events_function)
    # When a refresh works again
    admin.force_refresh(deps, "lib-1")
    # Then a Recovered event matches its schema: from refresh_failing, via a refresh
    detail = assert_valid(emitted, events.CONNECTION_RECOVERED)["detail"]
    assert (detail["recovered_from"], detail["via"]) == ("refresh_failing", "refresh")


def test_recovered_by_a_reconnect_after_reauthorization_required(deps, apicbase, emitted):
    # Given a connection that needs reauthorization
    imported(deps, apicbase)
    apicbase.revoke_all()
    with pytest.raises(NeedsReauthorization):
        admin.force_refresh(deps, "lib-1")
    # When the library is connected again through the callback
    state, binder = open_in_browser(deps, "lib-1")
    connect.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    # Then a Recovered event matches its schema: from needs_reauthorization, via the callback
    detail = assert_valid(emitted, events.CONNECTION_RECOVERED)["detail"]
    assert (detail["recovered_from"], detail["via"]) == ("needs_reauthorization", "callback")


def test_identity_changed_by_a_reconnect_as_another_user(deps, apicbase, emitted):
    # Given a connection made by chef@example.com
    state, binder = open_in_browser(deps, "lib-1")
    connect.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    # When another Apicbase user connects it again
    apicbase.username = "someone.else@example.com"
    state, binder = open_in_browser(deps, "lib-1")
    connect.complete_callback(deps, state=state, code=apicbase.issue_code(), error=None, binder=binder)
    # Then an Identity Changed event matches its schema and names both users
    detail = assert_valid(emitted, events.IDENTITY_CHANGED)["detail"]
    assert (detail["previous_username"], detail["username"]) == ("chef@example.com", "someone.else@example.com")


def test_no_event_carries_a_token(deps, apicbase, emitted):
    # Given every kind of event emitted for one connection
    imported(deps, apicbase)
    admin.force_refresh(deps, "lib-1")
    admin.disconnect(deps, "lib-1")
    # Then no issued token appears in any of them
    delivered = emitted()
    text = json.dumps(delivered)
    assert delivered
    assert not any(token in text for token in [*apicbase.issued_refresh_tokens, *apicbase.access_tokens])
