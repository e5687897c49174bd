"""Per-workload pooler alarms: rendered offline, evaluated locally, absent without workloads.

The stack-wide `pooler-waiting-clients` / `pooler-oldest-wait` sum every pool, so a saturated slow
workload raised them for everyone. Each workload with its own PgBouncer pool now gets its own pair,
on the exporter's per-user datapoints (`User` dimension); stacks without workloads render exactly
the alarms they rendered before (checked here: no `User` dimension, no workload rule).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import botocore.session
import pytest

from infra.alarm_rules import alarm_rules, local_alarm_rules, workload_pooler_rules
from infra.budget import Budget, compute_budget
from infra.offline import OfflineRun, ResourceRecord, run_offline
from infra.settings import load_stack
from pgbouncer import metrics
from pgbouncer.exporter import ExporterSettings
from slotguard.local.alarms import AlarmEvaluator

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@functools.cache
def run(stack: str) -> OfflineRun:
    return run_offline(load_stack(stack))


@functools.cache
def budget(stack: str) -> Budget:
    return compute_budget(load_stack(stack))


def _alarm(r: OfflineRun, key: str) -> ResourceRecord:
    return r.one(ALARM, f"-{key}")


def _queried_dimensions(alarm: ResourceRecord) -> list[dict[str, Any]]:
    """The dimensions an alarm reads: its own, or each metric of its metric math."""
    own = alarm.input("dimensions")
    if own:
        return [dict(own)]
    return [
        dict(q["metric"].get("dimensions") or {})
        for q in alarm.input("metricQueries") or []
        if q.get("metric")
    ]


def _metric(alarm: ResourceRecord) -> tuple[str, str]:
    """(metric name, statistic) of an alarm, its own or its metric math's."""
    if alarm.input("metricName"):
        return str(alarm.input("metricName")), str(alarm.input("statistic"))
    (query,) = [q for q in alarm.input("metricQueries") if q.get("metric")]
    return str(query["metric"]["metricName"]), str(query["metric"]["stat"])


def test_each_workload_with_its_own_pool_gets_a_waiting_and_an_oldest_wait_rule() -> None:
    b = budget("workloads")
    assert b.pgbouncer is not None
    assert b.alarms.pooler_oldest_wait_s is not None
    reports = b.workloads["reports"]
    assert reports.pool_size
    rules = {r.key: r for r in workload_pooler_rules(b)}
    assert set(rules) == {"pooler-waiting-clients-reports", "pooler-oldest-wait-reports"}
    waiting = rules["pooler-waiting-clients-reports"]
    # Its own server connections, as the stack-wide rule uses the pooler's total.
    assert waiting.threshold == reports.pool_size * b.pgbouncer.processes
    assert waiting.threshold < b.alarms.pooler_waiting_clients  # type: ignore[operator]
    assert rules["pooler-oldest-wait-reports"].threshold == b.pgbouncer.query_wait_timeout_s / 2
    assert {r.role for r in rules.values()} == {reports.role}
    # The stack-wide pair stays, and the local evaluator gets the workload pair too.
    keys = {r.key for r in local_alarm_rules(b)}
    assert {"pooler-waiting-clients", "pooler-oldest-wait", *rules} <= keys


def test_the_workload_alarms_read_the_exporters_per_user_metric() -> None:
    r = run("workloads")
    role = budget("workloads").workloads["reports"].role
    waiting = _alarm(r, "pooler-waiting-clients-reports")
    oldest = _alarm(r, "pooler-oldest-wait-reports")
    stack_wide = _alarm(r, "pooler-waiting-clients")
    assert _metric(waiting) == _metric(stack_wide)
    assert _metric(oldest) == _metric(_alarm(r, "pooler-oldest-wait"))
    # Gauges, one datapoint per task and interval. CloudWatch's statistics definitions
    # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Statistics-definitions.html):
    # "Maximum: The highest value observed during the specified period" -- the oldest wait of any
    # task; "Average: The value of Sum / SampleCount" -- times the tasks (metric math), the total
    # of the workload's waiting clients over its tasks.
    assert _metric(waiting) == (metrics.CLIENT_WAITING.name, "Average")
    assert _metric(oldest) == (metrics.MAX_WAIT.name, "Maximum")
    tasks = budget("workloads").pgbouncer.tasks  # type: ignore[union-attr]
    expressions = [q.get("expression") for q in waiting.input("metricQueries")]
    assert f"per_task * {tasks}" in expressions
    for alarm in (waiting, oldest):
        for dims in _queried_dimensions(alarm):
            assert dims[metrics.DIMENSION_USER] == role
    for dims in _queried_dimensions(stack_wide):
        assert metrics.DIMENSION_USER not in dims
    names = json.dumps(r.outputs.get("alarm_names", []), default=str)
    assert "pooler-waiting-clients-reports" in names  # so `slotguard verify` checks it too


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stacks_without_workloads_render_no_workload_alarm(stack: str) -> None:
    b = budget(stack)
    assert not b.workloads
    assert workload_pooler_rules(b) == []
    assert all(rule.role is None for rule in alarm_rules(b))
    for alarm in run(stack).of_type(ALARM):
        for dims in _queried_dimensions(alarm):
            assert metrics.DIMENSION_USER not in dims


def test_rds_proxy_has_no_per_workload_pool_and_no_workload_alarm() -> None:
    b = budget("workloads")
    assert b.pgbouncer is not None
    proxied = {**b.__dict__, "pgbouncer": None}
    assert workload_pooler_rules(Budget(**proxied)) == []


def test_the_local_evaluator_fires_the_workload_alarm_not_the_stack_wide_one() -> None:
    b = budget("workloads")
    role = b.workloads["reports"].role
    rules = local_alarm_rules(b)
    waiting = next(r for r in rules if r.key == "pooler-waiting-clients-reports")
    # The reports' queue is full; the pooler as a whole is below its own threshold.
    sample = {
        "db_connections": 1.0,
        "pooler_waiting_clients": waiting.threshold,
        "pooler_oldest_wait_s": 0.5,
        f"pooler_waiting_clients:{role}": waiting.threshold,
        f"pooler_oldest_wait_s:{role}": 0.5,
    }
    evaluator = AlarmEvaluator(rules, lambda: sample)
    evaluator.evaluate_once()
    assert evaluator.fired() == ["pooler-waiting-clients-reports"]
    assert evaluator.states["pooler-waiting-clients-reports"].value == waiting.threshold
    # Without the per-role figure (no workload pool sampled) the rule stays untouched.
    quiet = AlarmEvaluator(rules, lambda: {"pooler_waiting_clients": 0.0})
    quiet.evaluate_once()
    assert quiet.states["pooler-waiting-clients-reports"].value is None


def test_cloudwatch_takes_at_most_30_dimensions_so_the_exporter_leaves_room_for_user() -> None:
    # botocore's CloudWatch model, shape `Dimensions`: {"max": 30}; the PutMetricData API
    # reference: "You can use up to 30 dimensions per metric"
    # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html).
    model = botocore.session.get_session().get_service_model("cloudwatch")
    assert model.shape_for("Dimensions").metadata["max"] == 30
    ExporterSettings(admin_conninfos=("x",), dimensions={f"D{i}": "v" for i in range(29)})
    with pytest.raises(ValueError, match="at most 29"):
        ExporterSettings(admin_conninfos=("x",), dimensions={f"D{i}": "v" for i in range(30)})
