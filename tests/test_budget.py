"""The connection budget: its derivations, its invariants, and errors that name the setting."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from infra.budget import (
    ANSWER_RESERVE_S,
    LAMBDA_UNRESERVED_MINIMUM,
    NLB_IDLE_TIMEOUT_S,
    RDS_CLASS_MEMORY_GIB,
    Budget,
    BudgetError,
    compute_budget,
)
from infra.settings import FunctionSettings, SettingsError, StackSettings, settings_from_mapping

DEV: dict[str, Any] = {
    "database": {"max_connections": 25, "reserved_connections": 3, "admin_margin": 3},
    "pooler": {"kind": "pgbouncer", "pgbouncer": {"tasks": 2, "pool_size": 4, "reserve_pool": 1}},
    "functions": {
        "api": {"handler": "functions.api.handler", "timeout_s": 15, "reserved_concurrency": 800},
        "health": {
            "handler": "functions.health.handler",
            "timeout_s": 12,
            "reserved_concurrency": 5,
        },
    },
}


def budget_of(raw: dict[str, Any]) -> Budget:
    return compute_budget(settings_from_mapping(raw, stack="t"))


def with_override(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(DEV if base is None else base)
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return raw


def setting_exists(path: str) -> bool:
    """A violation's setting path must be a real, documented setting."""
    parts = path.split(".")
    model: Any = StackSettings
    index = 0
    while index < len(parts):
        name = parts[index]
        if model is StackSettings and name == "functions":
            rest = parts[index + 1 :]
            return len(rest) == 1 or (len(rest) == 2 and rest[1] in FunctionSettings.model_fields)
        field = model.model_fields.get(name)
        if field is None:
            return False
        annotation = field.annotation
        index += 1
        if index < len(parts):
            if not (isinstance(annotation, type) and hasattr(annotation, "model_fields")):
                return False
            model = annotation
    return True


# -- derivations --------------------------------------------------------------------------------


def test_dev_budget_numbers():
    b = budget_of(DEV)
    assert b.max_connections == 25
    # Ordinary roles get max_connections - superuser_reserved_connections (3) -
    # rds.rds_superuser_reserved_connections (2): "In Amazon RDS for PostgreSQL, the actual
    # maximum number of available connections to non-superusers is calculated as ...; the
    # default value for superuser_reserved_connections is 3, and ... for
    # rds.rds_superuser_reserved_connections is 2" (AWS knowledge center,
    # https://aws.amazon.com/premiumsupport/knowledge-center/rds-postgresql-error-connection-slots/).
    assert b.reserved_connections == 3 + 2
    assert b.max_connections - b.reserved_connections == 20  # dev's usable slots, not 22
    assert b.pooler_ceiling == 25 - 3 - 2 - 3
    assert b.pgbouncer is not None
    assert b.pgbouncer.max_db_connections == 5
    assert b.pooler_server_connections == 10  # 2 tasks x 5
    assert b.pooler_planned_max == 15  # a deploy's 3 tasks x 5
    assert b.app_user.connection_limit == 17
    assert b.alarms.db_connections_warn == math.ceil(25 * 0.7) == 18
    assert b.pooler_limit == 18 - 2 - 1  # below the warning alarm, after 2 observers
    assert b.alarms.db_connections_critical == 20
    assert b.alarms.db_connections_bypass == 15 + 3


def test_every_reserved_slot_is_counted_and_rendered():
    # PostgreSQL 16's reserved_connections keeps slots for roles with pg_use_reserved_connections
    # from ordinary roles too; its default is 0 ("reserved_connections",
    # https://www.postgresql.org/docs/16/runtime-config-connection.html).
    from infra.database import STATIC_PARAMETERS, parameters

    raw = with_override("database.pg_reserved_connections", 2)
    raw["alarms"] = {"warn_percent": 60, "critical_percent": 72}  # 18 of the 18 usable slots
    raw["pooler"]["pgbouncer"]["pool_size"] = 3
    s = settings_from_mapping(raw, stack="t")
    b = compute_budget(s)
    assert b.reserved_connections == 3 + 2 + 2
    assert b.pooler_ceiling == 25 - 7 - 3
    params = parameters(s, b)
    assert params["superuser_reserved_connections"] == "3"
    assert params["rds.rds_superuser_reserved_connections"] == "2"
    assert params["reserved_connections"] == "2"
    # All three are read at server start only, like max_connections.
    assert {"rds.rds_superuser_reserved_connections", "reserved_connections"} <= STATIC_PARAMETERS
    assert "reserved_connections" not in parameters(settings_from_mapping(DEV, stack="t"), b)
    with pytest.raises(SettingsError) as refused:
        settings_from_mapping(
            with_override("database", {"engine_version": "15", "pg_reserved_connections": 1}),
            stack="t",
        )
    assert "needs PostgreSQL 16" in str(refused.value)


def test_max_connections_from_instance_class_memory():
    raw = with_override("database", {"instance_class": "db.r6g.large"})
    b = budget_of(raw)
    assert b.max_connections == min(16 * 1024**3 // 9_531_392, 5000) == 1802
    assert "LEAST" in b.max_connections_source


def test_max_connections_capped_at_5000():
    raw = with_override("database", {"instance_class": "db.r6g.4xlarge"})
    assert budget_of(raw).max_connections == 5000


def test_unknown_instance_class_asks_for_explicit_max_connections():
    raw = with_override("database", {"instance_class": "db.x9.huge"})
    with pytest.raises(BudgetError) as caught:
        budget_of(raw)
    assert caught.value.violations[0].setting == "database.max_connections"


def test_pool_size_derived_to_fill_the_ceiling():
    raw = with_override("pooler.pgbouncer", {"tasks": 2, "reserve_pool": 1})
    b = budget_of(raw)
    assert b.pgbouncer is not None
    # Sized for a deploy's 3 tasks within the 15 the warning alarm leaves the pooler.
    assert b.pgbouncer.pool_size == 15 // 3 - 1
    assert b.pooler_planned_max <= b.pooler_limit < b.pooler_ceiling


def test_rds_proxy_percent_derived_within_ceiling():
    raw = with_override("pooler", {"kind": "rds-proxy"})
    b = budget_of(raw)
    assert b.rds_proxy is not None
    assert b.rds_proxy.max_connections_percent == 15 * 100 // 25 == 60
    assert b.rds_proxy.proxy_connections == 25 * 60 // 100 <= b.pooler_limit
    assert b.rds_proxy.max_idle_connections_percent <= b.rds_proxy.max_connections_percent
    assert b.alarms.pooler_waiting_clients is None
    assert b.alarms.proxy_pinned_connections is not None


def test_function_environment_carries_the_budget():
    b = budget_of(DEV)
    env = b.function_environment("api")
    assert env["DB_PORT"] == "6432"
    assert env["DB_USER"] == "app_user"
    assert int(env["DB_IDLE_DISCARD_S"]) < b.pgbouncer.client_idle_timeout_s  # type: ignore[union-attr]


def test_json_has_every_figure():
    data = budget_of(DEV).to_json()
    keys = {f["key"] for f in data["figures"]}
    assert {
        "database.max_connections",
        "pooler.ceiling",
        "pgbouncer.server_connections",
        "app_user.connection_limit",
        "alarms.db_connections_critical",
    } <= keys


# -- each invariant, broken on purpose ------------------------------------------------------------

BROKEN = [
    (
        "pooler.pgbouncer.pool_size",
        30,
        "pooler.pgbouncer.pool_size",
        "= 93 exceed the 15 the pooler may hold below the warning alarm (warn_percent 70% of 25",
    ),
    ("pooler.pgbouncer.tasks", 10, "pooler.pgbouncer.pool_size", "= 55 exceed the 15"),
    ("database.admin_margin", 19, "database.admin_margin", "= 1 leaves the pooler fewer than 2"),
    (
        "pooler.pgbouncer.max_client_conn",
        300,
        "pooler.pgbouncer.max_client_conn",
        "reserved concurrency api 800 + health 5 = 805 exceeds",
    ),
    (
        "pooler.pgbouncer.query_wait_timeout_s",
        30,
        "pooler.pgbouncer.query_wait_timeout_s",
        "pooler queue wait 30 s + statement_timeout 5 s",
    ),
    (
        "app_user.statement_timeout_ms",
        20_000,
        "app_user.statement_timeout_ms",
        "statement_timeout 20 s",
    ),
    (
        "functions.api.retry_budget_s",
        14,
        "functions.api.retry_budget_s",
        "connect timeout 3 s + retry budget 14 s",
    ),
    (
        "alarms",
        {"warn_percent": 90, "critical_percent": 99},
        "alarms.critical_percent",
        "above the 20 slots ordinary roles get (max_connections 25 - 3 superuser_reserved - 2 "
        "rds_superuser_reserved)",
    ),
    ("lambda_concurrency_quota", 800, "lambda_concurrency_quota", "keeps unreserved = 700"),
    ("app_user.migration_role", "app_user", "app_user.migration_role", "must differ"),
]


@pytest.mark.parametrize(("path", "value", "setting", "arithmetic"), BROKEN)
def test_each_invariant_refuses_a_breaking_setting(path, value, setting, arithmetic):
    with pytest.raises(BudgetError) as caught:
        budget_of(with_override(path, value))
    named = {v.setting: v.message for v in caught.value.violations}
    assert setting in named, named
    assert arithmetic in named[setting]


def test_rds_proxy_percent_over_ceiling_is_refused():
    raw = with_override(
        "pooler", {"kind": "rds-proxy", "rds_proxy": {"max_connections_percent": 90}}
    )
    with pytest.raises(BudgetError, match=r"max_connections 25 x 90% = 22 exceed the 15"):
        budget_of(raw)


def test_rds_proxy_idle_percent_above_max_is_refused():
    raw = with_override(
        "pooler",
        {
            "kind": "rds-proxy",
            "rds_proxy": {"max_connections_percent": 50, "max_idle_connections_percent": 60},
        },
    )
    with pytest.raises(BudgetError) as caught:
        budget_of(raw)
    assert caught.value.violations[0].setting == "pooler.rds_proxy.max_idle_connections_percent"


def test_rds_proxy_long_idle_client_timeout_is_refused():
    raw = with_override(
        "pooler", {"kind": "rds-proxy", "rds_proxy": {"idle_client_timeout_s": 1800}}
    )
    with pytest.raises(BudgetError, match="IdleClientTimeout 1800 s"):
        budget_of(raw)


def test_every_violation_is_reported_at_once():
    raw = with_override("pooler.pgbouncer.pool_size", 30)
    raw = with_override("functions.api.retry_budget_s", 14, raw)
    with pytest.raises(BudgetError) as caught:
        budget_of(raw)
    assert {v.setting for v in caught.value.violations} >= {
        "pooler.pgbouncer.pool_size",
        "functions.api.retry_budget_s",
    }


# -- properties -----------------------------------------------------------------------------------

names = st.sampled_from(["api", "health", "worker", "report-1"])
function_settings = st.fixed_dictionaries(
    {"handler": st.just("functions.api.handler")},
    optional={
        "timeout_s": st.integers(1, 120),
        "reserved_concurrency": st.none() | st.integers(1, 3000),
        "connect_timeout_s": st.integers(1, 10),
        "retry_budget_s": st.floats(0, 30, allow_nan=False),
    },
)
raw_settings = st.fixed_dictionaries(
    {},
    optional={
        "database": st.fixed_dictionaries(
            {},
            optional={
                "max_connections": st.integers(10, 5000),
                "instance_class": st.sampled_from(sorted(RDS_CLASS_MEMORY_GIB)),
                "reserved_connections": st.integers(1, 20),
                "rds_superuser_reserved_connections": st.integers(0, 20),
                "pg_reserved_connections": st.integers(0, 5),
                "admin_margin": st.integers(1, 100),
            },
        ),
        "pooler": st.fixed_dictionaries(
            {"kind": st.sampled_from(["pgbouncer", "rds-proxy"])},
            optional={
                "pgbouncer": st.fixed_dictionaries(
                    {},
                    optional={
                        "tasks": st.integers(1, 6),
                        "processes_per_task": st.integers(1, 4),
                        "pool_size": st.integers(1, 500),
                        "reserve_pool": st.integers(0, 10),
                        "max_client_conn": st.integers(10, 20_000),
                        "client_headroom_percent": st.integers(0, 90),
                        "query_wait_timeout_s": st.integers(1, 60),
                        "client_idle_timeout_s": st.integers(5, 340),
                        "max_tasks": st.integers(1, 12),
                        "deploy_surge_tasks": st.integers(0, 3),
                        "stop_timeout_s": st.integers(10, 120),
                    },
                ),
                "rds_proxy": st.fixed_dictionaries(
                    {},
                    optional={
                        "max_connections_percent": st.integers(1, 100),
                        "max_idle_connections_percent": st.integers(0, 100),
                        "connection_borrow_timeout_s": st.integers(1, 60),
                        "idle_client_timeout_s": st.integers(1, 1000),
                    },
                ),
            },
        ),
        "app_user": st.fixed_dictionaries(
            {},
            optional={
                "statement_timeout_ms": st.integers(100, 60_000),
                "idle_in_transaction_session_timeout_ms": st.integers(100, 60_000),
            },
        ),
        "functions": st.dictionaries(names, function_settings, min_size=1, max_size=3),
        "alarms": st.fixed_dictionaries(
            {},
            optional={
                "warn_percent": st.integers(10, 60),
                "critical_percent": st.integers(61, 99),
                "observer_connections": st.integers(0, 10),
            },
        ),
        "lambda_concurrency_quota": st.integers(1, 10_000),
    },
)


def assert_invariants(settings: StackSettings, b: Budget) -> None:
    """Every invariant of the budget, restated independently of how it is computed."""
    m = b.max_connections
    db = settings.database
    assert b.pooler_ceiling == m - db.reserved_total - db.admin_margin >= 2
    assert b.pooler_server_connections <= b.pooler_planned_max <= b.pooler_limit
    assert b.pooler_limit <= b.pooler_ceiling
    assert b.app_user.connection_limit == b.pooler_ceiling <= m - db.reserved_total
    reserved = b.reserved_concurrency_total
    assert (
        reserved == 0 or reserved <= settings.lambda_concurrency_quota - LAMBDA_UNRESERVED_MINIMUM
    )
    demand = b.client_demand
    assert demand >= sum(f.reserved_concurrency or 0 for f in settings.functions.values())
    if any(f.reserved_concurrency is None for f in settings.functions.values()):
        assert demand >= settings.lambda_concurrency_quota - reserved
    if b.pgbouncer is not None:
        pb = b.pgbouncer
        assert pb.max_db_connections == pb.pool_size + pb.reserve_pool
        assert pb.processes * pb.max_db_connections == b.pooler_server_connections
        assert pb.pool_size >= 1
        d = pb.deploy
        # ECS rounds maximumPercent x desired down: the peak at any desired count up to
        # max_tasks leaves room for the surge, and the pools are sized for the largest.
        for desired in range(d.min_tasks, d.max_tasks + 1):
            assert desired * d.maximum_percent // 100 >= desired + d.surge_tasks
            assert desired * d.maximum_percent // 100 <= d.peak_tasks
        assert d.peak_tasks * pb.processes_per_task * pb.max_db_connections == b.pooler_planned_max
        assert d.stop_timeout_s <= 120
        assert d.longest_transaction_s <= d.drain_timeout_s < d.stop_timeout_s
        assert demand <= pb.usable_client_capacity <= pb.client_capacity
        assert pb.client_idle_timeout_s < NLB_IDLE_TIMEOUT_S
        assert pb.tcp_keepalive_idle_s < NLB_IDLE_TIMEOUT_S
        assert pb.listen_backlog <= pb.max_client_conn
        assert pb.file_descriptors > pb.max_client_conn + pb.max_db_connections
        queue, reap = pb.query_wait_timeout_s, pb.client_idle_timeout_s
    else:
        rp = b.rds_proxy
        assert rp is not None
        assert m * rp.max_connections_percent // 100 == rp.proxy_connections <= b.pooler_ceiling
        assert rp.max_idle_connections_percent <= rp.max_connections_percent
        assert rp.idle_client_timeout_s < NLB_IDLE_TIMEOUT_S
        queue, reap = rp.connection_borrow_timeout_s, rp.idle_client_timeout_s
    statement_s = b.app_user.statement_timeout_ms / 1000
    for name, fn in settings.functions.items():
        fb = b.functions[name]
        assert fn.connect_timeout_s + fn.retry_budget_s + ANSWER_RESERVE_S < fn.timeout_s
        assert statement_s < fn.timeout_s
        assert queue + statement_s + ANSWER_RESERVE_S < fn.timeout_s
        assert fb.idle_discard_s < reap
    al = b.alarms
    assert al.db_connections_warn <= al.db_connections_critical <= m - db.reserved_connections
    assert al.db_connections_bypass == b.pooler_planned_max + db.admin_margin
    # A healthy peak never raises the warning alarm.
    assert b.pooler_planned_max + settings.alarms.observer_connections < al.db_connections_warn
    for figure in b.figures:
        if figure.headroom is not None:
            assert figure.headroom >= 0, figure


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_settings)
def test_any_accepted_settings_hold_every_invariant(raw):
    try:
        settings = settings_from_mapping(raw, stack="prop")
    except SettingsError as error:
        assert all(":" in p for p in error.problems)
        return
    try:
        b = compute_budget(settings)
    except BudgetError as error:
        for violation in error.violations:
            assert setting_exists(violation.setting), violation
            assert any(ch.isdigit() for ch in violation.message), violation
        return
    assert_invariants(settings, b)


def test_property_generator_reaches_accepted_budgets():
    """Guard against a generator whose examples are all refused (the property would be empty)."""
    accepted = 0

    @hsettings(max_examples=300, deadline=None)
    @given(raw_settings)
    def count(raw):
        nonlocal accepted
        try:
            compute_budget(settings_from_mapping(raw, stack="p"))
            accepted += 1
        except (SettingsError, BudgetError):
            pass

    count()
    assert accepted >= 10
