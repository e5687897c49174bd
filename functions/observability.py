"""Logger and metrics for one function instance (powertools, CloudWatch embedded metric format).

`EphemeralMetrics` rather than `Metrics`: the latter keeps its metric set at class level, shared by
every copy of this package loaded in one process (the local runtime loads one copy per simulated
instance), which would mix instances' figures. Cold starts are counted here for the same reason:
per package copy, i.e. per instance, as on AWS.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .errors import FailureClass

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "slotguard")
logger = Logger(service=SERVICE)
metrics = EphemeralMetrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "slotguard"), service=SERVICE
)

_cold = True


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
