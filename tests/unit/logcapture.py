"""Everything the broker logs during a block, for tests that prove secrets stay out of logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from apicbase_oauth.observability import logger


@contextmanager
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """The broker's JSON lines as CloudWatch would get them (at DEBUG, the most talkative level)
    plus every standard-library record at INFO with all its attributes."""
    stream = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous_stream, previous_level = handler.setStream(stream), logger.log_level
    logger.setLevel("DEBUG")
    caplog.set_level(logging.INFO)
    try:
        yield lambda: stream.getvalue() + "\n".join(repr(vars(record)) for record in caplog.records)
    finally:
        handler.setStream(previous_stream)
        logger.setLevel(previous_level)
