"""The connection events end to end in moto: the table's stream fed to the events function's real
handler by the local run's event source mapping (local/streams.py), and an integrator's consumer
(refresh_support.EventSink: a rule on the broker's source, targeting an SQS queue)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from local.streams import EventSource, StreamPoller

from apicbase_oauth import connect
from apicbase_oauth.config import Settings
from tests.conftest import REGION, Aws
from tests.unit.refresh_support import EventSink

EVENTS_FUNCTION = "ConnectionEventsFunction"


class Feed:
    """The event source mapping of the template, invoking the events handler in this process.
    ``invoke`` may be replaced to make an invocation fail; ``drain`` delivers what is new."""

    def __init__(
        self,
        aws: Aws,
        template: dict[str, Any],
        handler: Callable[[dict[str, Any]], Any],
        *,
        session: Any = None,
        **source: Any,
    ) -> None:
        """``session``: where the mapping's own AWS clients come from (it calls with the function's role)."""
        session = session or aws.session
        self.handler = handler
        self.invocations: list[dict[str, Any]] = []
        mapping = EventSource.of(template, EVENTS_FUNCTION, aws.refs)
        assert mapping is not None
        self.source = dataclasses.replace(mapping, **source)
        self.poller = StreamPoller(
            source=self.source,
            invoke=self._invoke,
            streams=session.client("dynamodbstreams"),
            sqs=session.client("sqs"),
            stream_arn=aws.refs["ConnectionsTable.StreamArn"],
            region=REGION,
            log=lambda line: None,
            sleep=lambda seconds: None,
        )

    def _invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        assert logical_id == EVENTS_FUNCTION
        self.invocations.append(event)
        return self.handler(event)

    def drain(self) -> None:
        while self.poller.poll_once():
            pass


def imported(deps: Any, apicbase: Any, connection_id: str = "lib-1") -> None:
    """Given: a connection made by importing a pair the fake Apicbase issued."""
    access, refresh = apicbase.issue_pair()
    connect.import_tokens(deps, connection_id, access_token=access, refresh_token=refresh)


@pytest.fixture
def events_function(load_handler) -> ModuleType:
    """The events function's handler module, as Lambda loads it (its DEPS can be adjusted)."""
    return load_handler(EVENTS_FUNCTION)


@pytest.fixture
def events_handler(events_function, lambda_context) -> Callable[[dict[str, Any]], Any]:
    return lambda event: events_function.lambda_handler(event, lambda_context)


@pytest.fixture
def consumer(aws: Aws, settings: Settings) -> EventSink:
    """An integrator's rule on the broker's events; the tests deliver the stream themselves."""
    return EventSink(aws.session, settings.event_source)


@pytest.fixture
def feed(aws: Aws, template: dict[str, Any], events_handler) -> Feed:
    return Feed(aws, template, events_handler)
