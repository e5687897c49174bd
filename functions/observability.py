"""Logger and metrics for one function instance (powertools, CloudWatch embedded metric format).

`EphemeralMetrics` rather than `Metrics`: the latter keeps its metric set at class level, shared by
every copy of this package loaded in one process (the local runtime loads one copy per simulated
instance), which would mix instances' figures. Cold starts are counted here for the same reason:
per package copy, i.e. per instance, as on AWS.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .errors import FailureClass

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "slotguard")
logger = Logger(service=SERVICE)
metrics = EphemeralMetrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "slotguard"), service=SERVICE
)

_cold = True

Handler = TypeVar("Handler", bound=Callable[..., Any])


def note_invocation() -> bool:
    """Record a cold start the first time this instance is invoked; True on that first time."""
    global _cold  # per-instance state is module state by design
    was_cold, _cold = _cold, False
    if was_cold:
        metrics.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
    return was_cold


def record_connect(latency_ms: float) -> None:
    metrics.add_metric(name="DbConnectLatency", unit=MetricUnit.Milliseconds, value=latency_ms)


def record_retry() -> None:
    metrics.add_metric(name="DbConnectRetries", unit=MetricUnit.Count, value=1)


def record_failure(failure: FailureClass) -> None:
    metrics.add_metric(name=f"DbFailure{failure.value}", unit=MetricUnit.Count, value=1)


def record_discard(reason: str) -> None:
    metrics.add_metric(name=f"DbConnectionDiscarded{reason}", unit=MetricUnit.Count, value=1)


def flush() -> None:
    """Write this invocation's metrics (EMF on stdout) if there are any."""
    if metrics.metric_set:
        metrics.flush_metrics()


def with_lambda_context(handler: Handler) -> Handler:
    """Put this invocation's context and cold start on every log line, for this instance only.

    What powertools' `inject_lambda_context` adds, kept per instance: it appends the keys to the
    one formatter registered on the stdlib logger named after the service, and reads cold start
    from a flag global to the process, so package copies loaded in one process (the local runtime
    runs one copy per instance, each on its own thread) would log each other's request id and a
    single cold start. Here the keys are thread-local (powertools' `thread_safe_*` keys, a
    context variable) and cold start is this copy's own flag; on AWS, one instance per process,
    the log lines are the same.
    """

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        cold_start = note_invocation()
        keys = build_lambda_context_model(context).__dict__
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(cold_start=cold_start, **keys)
        try:
            return handler(event, context, *args, **kwargs)
        finally:
            logger.thread_safe_clear_keys()

    return wrapper  # type: ignore[return-value]
