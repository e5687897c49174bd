"""The pooler's CloudWatch metric names, namespace and dimension names: defined here, once.

The exporter publishes these; the AWS stack's alarms and dashboard import them, so a renamed metric
cannot leave an alarm watching nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NAMESPACE: Final = "Slotguard/PgBouncer"

# Dimensions every datapoint carries. Values come from the task's settings; the task id is not a
# dimension, so alarms see the service as a whole (CloudWatch aggregates the tasks' datapoints).
DIMENSION_STACK: Final = "Stack"
DIMENSION_SERVICE: Final = "Service"
DIMENSION_DATABASE: Final = "Database"
DIMENSION_NAMES: Final = (DIMENSION_STACK, DIMENSION_SERVICE, DIMENSION_DATABASE)
# A workload's own pool: CLIENT_WAITING and MAX_WAIT are published once more per login role that
# has its own `[users]` pool_size, with this extra dimension (none without workloads).
DIMENSION_USER: Final = "User"


@dataclass(frozen=True)
class Metric:
    """One published metric: its name, CloudWatch unit and what it tells."""

    name: str
    unit: str
    description: str


CLIENT_ACTIVE = Metric(
    "ClientActive", "Count", "clients linked to a server connection or idle between transactions"
)
CLIENT_WAITING = Metric(
    "ClientWaiting", "Count", "clients that sent a query and wait for a server connection"
)
SERVER_ACTIVE = Metric("ServerActive", "Count", "server connections linked to a client")
SERVER_IDLE = Metric("ServerIdle", "Count", "server connections ready for a client")
SERVER_CONNECTIONS = Metric(
    "ServerConnections", "Count", "all server connections (active, idle, used, tested, login)"
)
MAX_WAIT = Metric(
    "MaxWaitSeconds", "Seconds", "how long the oldest waiting client has waited (maxwait)"
)
CLIENT_CONNECTIONS = Metric("ClientConnections", "Count", "client connections held by the pooler")
CLIENT_CAPACITY = Metric(
    "ClientCapacity", "Count", "client connections the pooler accepts (max_client_conn x processes)"
)
CLIENT_CAPACITY_PERCENT = Metric(
    "ClientCapacityPercent", "Percent", "ClientConnections as a percentage of ClientCapacity"
)
AVG_WAIT = Metric(
    "AvgWaitMilliseconds",
    "Milliseconds",
    "client wait for a server per transaction, averaged over the poll interval",
)
TRANSACTIONS_PER_SECOND = Metric(
    "TransactionsPerSecond", "Count/Second", "transactions pooled per second over the poll interval"
)
# 1 per successful poll and publish of every process: the alarms treat its absence as the
# pooler (or the exporter) being down.
HEARTBEAT = Metric("ExporterHeartbeat", "Count", "1 per interval while every process answers")
# Days until the client-facing certificate the task serves expires (read from its file). Days
# are no CloudWatch unit: "None" (PutMetricData's StandardUnit enum).
CERTIFICATE_DAYS_LEFT = Metric(
    "CertificateDaysLeft", "None", "days until the TLS certificate the task serves expires"
)

ALL: Final = (
    CLIENT_ACTIVE,
    CLIENT_WAITING,
    SERVER_ACTIVE,
    SERVER_IDLE,
    SERVER_CONNECTIONS,
    MAX_WAIT,
    CLIENT_CONNECTIONS,
    CLIENT_CAPACITY,
    CLIENT_CAPACITY_PERCENT,
    AVG_WAIT,
    TRANSACTIONS_PER_SECOND,
    HEARTBEAT,
    CERTIFICATE_DAYS_LEFT,
)
NAMES: Final = tuple(m.name for m in ALL)
# The metrics also published per workload role (with DIMENSION_USER).
PER_USER: Final = (CLIENT_WAITING, MAX_WAIT)
# Separates a metric's name from its role in the exporter's figures: "ClientWaiting|reports".
USER_SEPARATOR: Final = "|"


def per_user_key(metric: Metric, user: str) -> str:
    """The figures' key of one role's value of a per-user metric."""
    return f"{metric.name}{USER_SEPARATOR}{user}"
