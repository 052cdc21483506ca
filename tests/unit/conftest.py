"""Fixtures of the unit suite beyond the shared ones: the connection events' stream and consumer."""

from tests.unit.stream_support import consumer, events_function, events_handler, feed  # noqa: F401 (fixtures)
