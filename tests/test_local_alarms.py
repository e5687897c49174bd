"""The local alarm evaluator fires the budget's alarms on a real PostgreSQL's connection count."""

from __future__ import annotations

import json

import psycopg
import pytest

from infra.alarm_rules import AlarmRule, alarm_rules
from infra.budget import compute_budget
from infra.settings import settings_from_mapping
from slotguard.local.alarms import AlarmEvaluator
from slotguard.local.monitor import DatabaseObserver


def budget_for(max_connections: int):
    raw = {
        "database": {
            "max_connections": max_connections,
            "reserved_connections": 2,
            "admin_margin": 2,
        },
        "pooler": {
            "pgbouncer": {"tasks": 1, "pool_size": 4, "reserve_pool": 0, "deploy_surge_tasks": 0}
        },
    }
    return compute_budget(settings_from_mapping(raw, stack="alarm"))


def test_rules_carry_the_budget_thresholds():
    budget = budget_for(20)
    rules = {r.key: r for r in alarm_rules(budget)}
    assert rules["db-connections-warn"].threshold == budget.alarms.db_connections_warn == 14
    assert rules["db-connections-critical"].threshold == 16
    assert rules["db-connections-bypass"].threshold == 4 + 2
    assert rules["db-connections-bypass"].breached(7)
    assert not rules["db-connections-bypass"].breached(6)
    assert "pooler-waiting-clients" in rules
    assert "proxy-pinned-connections" not in rules


def test_evaluation_periods_delay_firing():
    values = iter([20.0, 20.0, 1.0])
    rule = AlarmRule("x", "db_connections", 10, "GreaterThanOrEqualToThreshold", "test")
    evaluator = AlarmEvaluator(
        [rule], lambda: {"db_connections": next(values)}, evaluation_periods=2
    )
    assert evaluator.evaluate_once() == []
    fired = evaluator.evaluate_once()
    assert [t.new for t in fired] == ["ALARM"]
    cleared = evaluator.evaluate_once()
    assert [(t.old, t.new) for t in cleared] == [("ALARM", "OK")]
    assert evaluator.fired() == ["x"]


@pytest.mark.integration
def test_bypass_alarm_fires_on_real_connections(postgres_factory, scratch_dir):
    server = postgres_factory(max_connections=20, superuser_reserved_connections=2)
    budget = budget_for(20)
    observer = DatabaseObserver(server.conninfo())
    log = scratch_dir / "alarms.jsonl"
    evaluator = AlarmEvaluator(
        alarm_rules(budget), lambda: {"db_connections": observer.connections()}, log_file=log
    )
    evaluator.evaluate_once()
    assert evaluator.fired() == []
    # Ten direct connections: more than pooler 4 + admin 2, the signature of a bypass.
    held = [psycopg.connect(server.conninfo()) for _ in range(10)]
    try:
        evaluator.evaluate_once()
    finally:
        for conn in held:
            conn.close()
        observer.close()
    assert "db-connections-bypass" in evaluator.fired()
    assert "db-connections-warn" not in evaluator.fired()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(
        entry["key"] == "db-connections-bypass" and entry["new"] == "ALARM" for entry in logged
    )


def test_aws_only_health_rules_are_not_shown_locally():
    """ECS task counts, NLB target health, the exporter heartbeat and RDS Proxy availability exist
    only on AWS; the local target evaluates every other rule."""
    from infra.alarm_rules import AWS_ONLY_METRICS, local_alarm_rules

    budget = budget_for(20)
    local = {r.key for r in local_alarm_rules(budget)}
    everything = {r.key: r for r in alarm_rules(budget)}
    assert "pooler-exporter-silent" in everything
    assert "pooler-exporter-silent" not in local
    assert local == {k for k, r in everything.items() if r.metric not in AWS_ONLY_METRICS}
    assert "db-connections-warn" in local
