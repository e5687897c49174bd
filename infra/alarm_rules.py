"""The alarm rules of a budget, defined once for CloudWatch and for the local alarm evaluator.

Each rule names a logical metric, the budget's threshold and the comparison. The AWS stack maps
the logical metric to a CloudWatch metric; the local target samples it from `pg_stat_activity` and
PgBouncer's admin console. Both therefore alarm on exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.budget import Budget

Comparison = Literal["GreaterThanOrEqualToThreshold", "GreaterThanThreshold", "LessThanThreshold"]
# CloudWatch's TreatMissingData: a pooler that is down publishes nothing, so its health alarms
# treat silence as a breach; usage alarms treat it as no traffic.
MissingData = Literal["notBreaching", "breaching"]
Metric = Literal[
    "db_connections",
    "pooler_waiting_clients",
    "pooler_oldest_wait_s",
    "pooler_client_connections",
    "proxy_pinned_connections",
    "proxy_borrow_latency_us",
    "function_throttles",
    "function_errors",
    # Whether the pooler is up (AWS only: the local target has no ECS, NLB or RDS Proxy).
    "pooler_tasks_missing",
    "pooler_unhealthy_targets",
    "pooler_healthy_targets",
    "pooler_exporter_heartbeat",
    "proxy_availability_percent",
    "pooler_certificate_days_left",
    # Aurora Serverless v2: capacity in use as a share of the maximum ACUs (AWS only).
    "db_acu_utilization",
]
# Measured by AWS only (ECS, the NLB, RDS Proxy): the local target has nothing to sample.
AWS_ONLY_METRICS: frozenset[str] = frozenset(
    {
        "pooler_tasks_missing",
        "pooler_unhealthy_targets",
        "pooler_healthy_targets",
        "pooler_exporter_heartbeat",
        "proxy_availability_percent",
        "pooler_certificate_days_left",
        "db_acu_utilization",
    }
)
# The pooler's certificate is renewed by a `pulumi up` in its last 30 days (the program's
# early_renewal_hours, infra/pooler_pgbouncer.py): the alarm fires when that window opens, so the
# next `pulumi up` renews it with a month to spare.
CERTIFICATE_RENEWAL_DAYS = 30
# A proxy whose target group answered fewer than this share of health checks is degraded.
PROXY_AVAILABILITY_MIN_PERCENT = 99.0
# A Serverless v2 instance this close to its maximum ACUs cannot scale further: raise the
# maximum (which also raises AWS's max_connections table) before queries slow down.
ACU_UTILIZATION_ALARM_PERCENT = 90.0


@dataclass(frozen=True)
class AlarmRule:
    """One alarm: `metric` compared with `threshold`."""

    key: str
    metric: Metric
    threshold: float
    comparison: Comparison
    description: str
    missing_data: MissingData = "notBreaching"
    # A workload's own pool: the metric of this login role only (PgBouncer's `User` dimension).
    role: str | None = None

    @property
    def sample_key(self) -> str:
        """Where the local evaluator finds the value: the metric, per role for a workload."""
        return self.metric if self.role is None else f"{self.metric}:{self.role}"

    def breached(self, value: float) -> bool:
        if self.comparison == "GreaterThanThreshold":
            return value > self.threshold
        if self.comparison == "LessThanThreshold":
            return value < self.threshold
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
    rules += workload_pooler_rules(budget)
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
    rules += pooler_health_rules(budget)
    if budget.serverless_acu is not None:
        rules.append(
            AlarmRule(
                "db-acu-utilization",
                "db_acu_utilization",
                ACU_UTILIZATION_ALARM_PERCENT,
                "GreaterThanOrEqualToThreshold",
                f"a Serverless v2 instance uses {ACU_UTILIZATION_ALARM_PERCENT:g}% of its "
                f"maximum {budget.serverless_acu[1]:g} ACUs: raise "
                "database.aurora.max_capacity_acu",
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


def workload_pooler_rules(budget: Budget) -> list[AlarmRule]:
    """Waiting clients and oldest wait of each workload's own PgBouncer pool.

    Derived like the stack-wide pair: waiting clients at the workload's server connections
    (its pool_size per process x processes), oldest wait at half the queue wait limit
    (query_wait_timeout is the pooler's, the same for every pool). None without workloads or
    with RDS Proxy, which has no per-user pool.
    """
    pb = budget.pgbouncer
    al = budget.alarms
    if pb is None or al.pooler_waiting_clients is None or al.pooler_oldest_wait_s is None:
        return []
    rules: list[AlarmRule] = []
    for w in sorted(budget.workloads.values(), key=lambda w: w.name):
        if not w.pool_size:
            continue
        servers = w.pool_size * pb.processes
        rules += [
            AlarmRule(
                f"pooler-waiting-clients-{w.name}",
                "pooler_waiting_clients",
                servers,
                "GreaterThanOrEqualToThreshold",
                f"workload {w.name}: {servers} or more clients of {w.role} waiting for a server "
                f"connection (its pool {w.pool_size} x {pb.processes} processes)",
                role=w.role,
            ),
            AlarmRule(
                f"pooler-oldest-wait-{w.name}",
                "pooler_oldest_wait_s",
                al.pooler_oldest_wait_s,
                "GreaterThanOrEqualToThreshold",
                f"workload {w.name}: a client of {w.role} has waited "
                f"{al.pooler_oldest_wait_s:g} s, half the queue wait limit",
                role=w.role,
            ),
        ]
    return rules


def local_alarm_rules(budget: Budget) -> list[AlarmRule]:
    """The rules the local target can evaluate (every one but the AWS-only health rules)."""
    return [rule for rule in alarm_rules(budget) if rule.metric not in AWS_ONLY_METRICS]


def pooler_health_rules(budget: Budget) -> list[AlarmRule]:
    """The pooler is down or degraded: tasks missing, targets unhealthy, the exporter silent."""
    if budget.pgbouncer is not None:
        return [
            AlarmRule(
                "pooler-tasks-below-desired",
                "pooler_tasks_missing",
                1,
                "GreaterThanOrEqualToThreshold",
                "fewer PgBouncer tasks running than desired",
                missing_data="breaching",
            ),
            AlarmRule(
                "pooler-unhealthy-targets",
                "pooler_unhealthy_targets",
                1,
                "GreaterThanOrEqualToThreshold",
                "a PgBouncer task fails the NLB's health check",
            ),
            AlarmRule(
                "pooler-no-healthy-target",
                "pooler_healthy_targets",
                1,
                "LessThanThreshold",
                "no PgBouncer task passes the NLB's health check: the pooler is down",
                missing_data="breaching",
            ),
            AlarmRule(
                "pooler-exporter-silent",
                "pooler_exporter_heartbeat",
                1,
                "LessThanThreshold",
                "no PgBouncer task published metrics: the pooler or its exporter is down",
                missing_data="breaching",
            ),
            AlarmRule(
                "pooler-certificate-expiring",
                "pooler_certificate_days_left",
                CERTIFICATE_RENEWAL_DAYS,
                "LessThanThreshold",
                f"the pooler's TLS certificate expires in under {CERTIFICATE_RENEWAL_DAYS} days: "
                "run `pulumi up` (it renews the certificate inside that window) and let the "
                "tasks roll",
            ),
        ]
    if budget.rds_proxy is not None:
        return [
            AlarmRule(
                "proxy-unavailable",
                "proxy_availability_percent",
                PROXY_AVAILABILITY_MIN_PERCENT,
                "LessThanThreshold",
                f"RDS Proxy's target answered under {PROXY_AVAILABILITY_MIN_PERCENT:g}% of its "
                "health checks",
            )
        ]
    return []
