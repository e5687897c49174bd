"""The alarm rules of a budget, defined once for CloudWatch and for the local alarm evaluator.

Each rule names a logical metric, the budget's threshold and the comparison. The AWS stack maps
the logical metric to a CloudWatch metric; the local target samples it from `pg_stat_activity` and
PgBouncer's admin console. Both therefore alarm on exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.budget import Budget

Comparison = Literal["GreaterThanOrEqualToThreshold", "GreaterThanThreshold"]
Metric = Literal[
    "db_connections",
    "pooler_waiting_clients",
    "pooler_oldest_wait_s",
    "pooler_client_connections",
    "proxy_pinned_connections",
    "proxy_borrow_latency_us",
    "function_throttles",
    "function_errors",
]


@dataclass(frozen=True)
class AlarmRule:
    """One alarm: `metric` compared with `threshold`."""

    key: str
    metric: Metric
    threshold: float
    comparison: Comparison
    description: str

    def breached(self, value: float) -> bool:
        if self.comparison == "GreaterThanThreshold":
            return value > self.threshold
        return value >= self.threshold


def alarm_rules(budget: Budget) -> list[AlarmRule]:
    """Every alarm of the stack, with the budget's thresholds."""
    al = budget.alarms
    m = budget.max_connections
    rules = [
        AlarmRule(
            "db-connections-warn",
            "db_connections",
            al.db_connections_warn,
            "GreaterThanOrEqualToThreshold",
            f"database connections at {al.db_connections_warn} of max_connections {m}",
        ),
        AlarmRule(
            "db-connections-critical",
            "db_connections",
            al.db_connections_critical,
            "GreaterThanOrEqualToThreshold",
            f"database connections at {al.db_connections_critical} of max_connections {m}: "
            "new clients will soon be refused",
        ),
        AlarmRule(
            "db-connections-bypass",
            "db_connections",
            al.db_connections_bypass,
            "GreaterThanThreshold",
            f"more than {al.db_connections_bypass} database connections (pooler's planned peak "
            f"{budget.pooler_planned_max} + admin {budget.admin_margin}): something "
            "bypasses the pooler",
        ),
    ]
    if al.pooler_waiting_clients is not None:
        rules.append(
            AlarmRule(
                "pooler-waiting-clients",
                "pooler_waiting_clients",
                al.pooler_waiting_clients,
                "GreaterThanOrEqualToThreshold",
                f"{al.pooler_waiting_clients} or more clients waiting for a server connection",
            )
        )
    if al.pooler_oldest_wait_s is not None:
        rules.append(
            AlarmRule(
                "pooler-oldest-wait",
                "pooler_oldest_wait_s",
                al.pooler_oldest_wait_s,
                "GreaterThanOrEqualToThreshold",
                f"a client has waited {al.pooler_oldest_wait_s:g} s, half the queue wait limit",
            )
        )
    if al.pooler_client_connections is not None:
        rules.append(
            AlarmRule(
                "pooler-client-connections",
                "pooler_client_connections",
                al.pooler_client_connections,
                "GreaterThanOrEqualToThreshold",
                f"{al.pooler_client_connections} client connections, 80% of the pooler's capacity",
            )
        )
    if al.proxy_pinned_connections is not None:
        rules.append(
            AlarmRule(
                "proxy-pinned-connections",
                "proxy_pinned_connections",
                al.proxy_pinned_connections,
                "GreaterThanOrEqualToThreshold",
                f"{al.proxy_pinned_connections} proxy connections pinned to one client session",
            )
        )
    if al.proxy_borrow_latency_us is not None:
        rules.append(
            AlarmRule(
                "proxy-borrow-latency",
                "proxy_borrow_latency_us",
                al.proxy_borrow_latency_us,
                "GreaterThanOrEqualToThreshold",
                "borrowing a database connection takes half the borrow timeout",
            )
        )
    rules += [
        AlarmRule(
            "function-throttles",
            "function_throttles",
            al.function_throttles,
            "GreaterThanOrEqualToThreshold",
            "invocations throttled by reserved concurrency",
        ),
        AlarmRule(
            "function-errors",
            "function_errors",
            al.function_errors,
            "GreaterThanOrEqualToThreshold",
            "function errors",
        ),
    ]
    return rules
