"""One Logger and one Metrics per container, shared by the handlers and the layer.

JSON log lines and CloudWatch embedded-metric-format (EMF) lines on stdout, with the keys and
the environment variables of Powertools' Logger and Metrics, written with the standard library:
importing Powertools' package for them cost every function's cold start about 6 ms of CPU, more
than the callback's budget (docs/BENCHMARKS.md). The handlers' ``@logger.inject_lambda_context``
and ``@metrics.log_metrics`` work as Powertools' do; the use cases log and count through these two.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

SERVICE = "apicbase-oauth-broker"
# Where API Gateway's request id is in a payload 2.0 event: the logs' correlation_id.
API_GATEWAY_HTTP = "requestContext.requestId"
MAX_METRICS = 100  # EMF allows 100 metrics per line: a full set is flushed at once
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class LambdaContext(Protocol):
    """What the handlers and the logger read of Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int | str
    invoked_function_arn: str
    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int: ...


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: Powertools' keys in Powertools' order, None values left out."""

    def __init__(self, owner: Logger) -> None:
        super().__init__()
        self.owner = owner

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": self.formatTime(record),
            "service": self.owner.service,
            **self.owner.context,
            **self.owner.keys,
            **getattr(record, "keys", {}),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
            entry["exception_name"] = record.exc_info[0].__name__
        trace = os.environ.get("_X_AMZN_TRACE_ID", "")
        if trace.startswith("Root="):
            entry["xray_trace_id"] = trace.split(";", 1)[0].removeprefix("Root=")
        return json.dumps({k: v for k, v in entry.items() if v is not None}, separators=(",", ":"), default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        local = time.localtime(record.created)
        return time.strftime(f"%Y-%m-%d %H:%M:%S,{int(record.msecs):03d}%z", local)


class Logger:
    """Structured logging: ``logger.info("refreshed", connection_id=...)``; keyword arguments
    become keys of that line, ``append_keys`` keys of every line until the next invocation."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.keys: dict[str, Any] = {}
        self.context: dict[str, Any] = {}
        self._cold_start = True
        self._logger = logging.getLogger(service)
        self._logger.propagate = False
        self.registered_formatter = _JsonFormatter(self)
        self.registered_handler = logging.StreamHandler(sys.stdout)
        self.registered_handler.setFormatter(self.registered_formatter)
        self._logger.addHandler(self.registered_handler)
        self.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL") or "INFO")

    @property
    def log_level(self) -> int:
        return self._logger.level

    def setLevel(self, level: str | int) -> None:
        self._logger.setLevel(level.upper() if isinstance(level, str) else level)

    def addHandler(self, handler: logging.Handler) -> None:
        self._logger.addHandler(handler)

    def append_keys(self, **keys: Any) -> None:
        self.keys.update(keys)

    def debug(self, message: str, **keys: Any) -> None:
        self._log(logging.DEBUG, message, keys)

    def info(self, message: str, **keys: Any) -> None:
        self._log(logging.INFO, message, keys)

    def warning(self, message: str, **keys: Any) -> None:
        self._log(logging.WARNING, message, keys)

    def error(self, message: str, **keys: Any) -> None:
        self._log(logging.ERROR, message, keys)

    def _log(self, level: int, message: str, keys: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            # stacklevel 3: the location is our caller's, not this method's or the level's.
            self._logger.log(level, message, extra={"keys": keys}, stacklevel=3)

    def inject_lambda_context(
        self, *, correlation_id_path: str | None = None, clear_state: bool = False
    ) -> Callable[[_Handler], _Handler]:
        """A handler decorator: every line of the invocation says which function, request and
        API Gateway request it belongs to, and whether the container was cold."""

        def decorate(handler: _Handler) -> _Handler:
            @functools.wraps(handler)
            def invoke(event: Any, context: LambdaContext, *args: Any, **kwargs: Any) -> Any:
                if clear_state:
                    self.keys = {}
                self.context = {
                    "cold_start": self._cold_start,
                    "function_name": context.function_name,
                    "function_memory_size": context.memory_limit_in_mb,
                    "function_arn": context.invoked_function_arn,
                    "function_request_id": context.aws_request_id,
                    "correlation_id": _find(event, correlation_id_path) if correlation_id_path else None,
                }
                self._cold_start = False
                return handler(event, context, *args, **kwargs)

            return invoke  # type: ignore[return-value]

        return decorate


def _find(event: Any, path: str) -> Any:
    for name in path.split("."):
        event = event.get(name) if isinstance(event, dict) else None
    return event


class Metrics:
    """Counts in CloudWatch's embedded metric format, one line per invocation (``log_metrics``)
    under ``POWERTOOLS_METRICS_NAMESPACE``, with the service as the one dimension."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE")  # read once, as Powertools does
        self.metric_set: dict[str, dict[str, Any]] = {}

    def add_metric(self, *, name: str, unit: str, value: float) -> None:
        metric = self.metric_set.setdefault(name, {"Unit": unit, "StorageResolution": 60, "Value": []})
        metric["Value"].append(float(value))
        if len(self.metric_set) == MAX_METRICS:
            self.flush_metrics()

    def clear_metrics(self) -> None:
        self.metric_set.clear()

    def flush_metrics(self) -> None:
        metrics, self.metric_set = self.metric_set, {}
        if not metrics or os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            return
        if not self.namespace:  # as Powertools: counts under no namespace would reach no alarm
            raise RuntimeError("POWERTOOLS_METRICS_NAMESPACE is not set (template.yaml's Globals set it)")
        directive = {
            "Namespace": self.namespace,
            "Dimensions": [["service"]],
            "Metrics": [{"Name": name, "Unit": metric["Unit"]} for name, metric in metrics.items()],
        }
        line = {
            "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
            "service": self.service,
            **{name: metric["Value"] for name, metric in metrics.items()},
        }
        print(json.dumps(line, separators=(",", ":")), flush=True)

    def log_metrics(self, handler: _Handler) -> _Handler:
        """A handler decorator: what the invocation counted is printed when it ends, raised or not."""

        @functools.wraps(handler)
        def invoke(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            finally:
                self.flush_metrics()

        return invoke  # type: ignore[return-value]


logger = Logger(SERVICE)
metrics = Metrics(SERVICE)
