"""Workloads in the budget and the rendered pooler config (pure code, no servers).

The golden file `tests/golden/default_workload.json` was rendered by the kit BEFORE workloads
existed (commit 5ef2f3e): a stack without `workloads` must render the same roles, the same
functions' environment and the same pgbouncer.ini. If a later change means to alter those, rerun
the renderings and rewrite the file in the same commit, saying what happens to running stacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.budget import BudgetError, compute_budget
from infra.settings import StackSettings, load_stack, settings_from_mapping
from pgbouncer import environment as task_env
from pgbouncer.config import (
    PgBouncerConfigError,
    UserPool,
    render,
    render_ini,
)
from slotguard.local.stack import StackPlan, pgbouncer_settings, user_pools
from slotguard.local.state import Ports
from slotguard.local.tls import TlsFiles

GOLDEN = json.loads((Path(__file__).parent / "golden" / "default_workload.json").read_text())
PORTS = Ports(postgres=5432, pgbouncer=6432, runtime=9000, aws=9001)
TLS = TlsFiles(Path("/ca.pem"), Path("/server.pem"), Path("/server.key"))


def _stack(workloads: dict[str, Any], functions: dict[str, Any], **more: Any) -> StackSettings:
    raw: dict[str, Any] = {
        "database": {"max_connections": 50},
        "workloads": workloads,
        "functions": functions,
        **more,
    }
    return settings_from_mapping(raw, stack="t")


FAST = {"handler": "functions.api.handler", "reserved_concurrency": 100}
SLOW = {
    "handler": "functions.reports.handler",
    "workload": "reports",
    "timeout_s": 30,
    "reserved_concurrency": 10,
}
REPORTS = {"statement_timeout_ms": 20_000, "pool_share_percent": 30}


def _violations(settings: StackSettings) -> list[str]:
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings)
    return [str(v) for v in caught.value.violations]


# -- the default workload renders exactly as before ----------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_default_workload_renders_the_roles_and_environment_of_before(stack: str) -> None:
    settings = load_stack(stack)
    budget = compute_budget(settings)
    golden = GOLDEN[stack]
    assert budget.workloads == {}
    assert budget.bootstrap_event(settings.database.name) == golden["bootstrap_event"]
    assert {n: budget.function_environment(n) for n in budget.functions} == (
        golden["function_environment"]
    )
    app_user = budget.to_json()["app_user"]
    assert app_user == golden["app_user"]
    assert app_user["connection_limit"] == budget.pooler_ceiling
    if budget.pgbouncer is not None:
        pb = budget.to_json()["pgbouncer"]
        assert {k: pb[k] for k in golden["pgbouncer_pool"]} == golden["pgbouncer_pool"]
        assert budget.default_pool_size == budget.pgbouncer.pool_size


def test_default_workload_renders_the_pgbouncer_ini_of_before(tmp_path: Path) -> None:
    plan = StackPlan.load("dev", base=Path("/nonexistent-state"))
    texts = render_ini(pgbouncer_settings(plan, PORTS, TLS))
    state = str(plan.paths.root.parent)
    assert [t.replace(state, "STATE") for t in texts] == GOLDEN["dev"]["pgbouncer_ini"]
    assert all("[users]" not in t for t in texts)


# -- the split --------------------------------------------------------------------------------


def test_shares_split_each_process_pool_and_size_the_role_limits() -> None:
    settings = _stack({"reports": REPORTS}, {"orders": FAST, "reports": SLOW})
    budget = compute_budget(settings)
    pb = budget.pgbouncer
    assert pb is not None
    # max_connections 50: ceiling 42 (50 - 3 - 2 reserved - 3 admin); below the warning alarm
    # 35 - 2 observers - 1 = 32; a deploy runs 3 tasks: 32 // 3 = 10 per process, less the reserve 1 = a pool of 9.
    assert (pb.pool_size, pb.reserve_pool, pb.deploy.peak_tasks) == (9, 1, 3)
    reports = budget.workloads["reports"]
    assert reports.role == "app_user_reports"
    assert reports.pool_size == 9 * 30 // 100 == 2
    assert reports.max_user_connections == 3
    assert budget.default_pool_size == 7
    # Its limit covers its pool and the reserve in every process at the peak: 3 x (2 + 1).
    assert reports.connection_limit == 9
    # app_user: the ceiling less the other pools at the peak, still >= 3 x (7 + 1).
    assert budget.app_user.connection_limit == 42 - 3 * 2 == 36
    assert budget.app_user.connection_limit >= 3 * (7 + 1)
    assert reports.functions == ("reports",)


def test_each_function_logs_in_as_its_workloads_role_with_its_timeout_chain() -> None:
    budget = compute_budget(_stack({"reports": REPORTS}, {"orders": FAST, "reports": SLOW}))
    assert budget.function_environment("orders")["DB_USER"] == "app_user"
    assert budget.function_environment("reports")["DB_USER"] == "app_user_reports"
    # queue wait 5 + its own statement_timeout + 1 to answer.
    assert budget.functions["reports"].worst_query_s == 5 + 20 + 1
    assert budget.functions["orders"].worst_query_s == 5 + 5 + 1
    event = budget.bootstrap_event("app")
    assert event["workloads"] == [
        {
            "name": "app_user_reports",
            "connection_limit": 9,
            "admin_margin": 3,
            "statement_timeout_ms": 20_000,
            "idle_in_transaction_session_timeout_ms": 10_000,
            "lock_timeout_ms": 2000,
            "search_path": ["app"],
        }
    ]


def test_the_workloads_example_stack_passes_the_budget() -> None:
    settings = load_stack("workloads")
    budget = compute_budget(settings)
    assert "api" not in settings.functions
    assert budget.workloads["reports"].statement_timeout_ms > (
        settings.app_user.statement_timeout_ms
    )
    assert budget.role_of("reports") != budget.role_of("orders")
    # An 8 s report fits its own role's timeout and not app_user's (the 503).
    assert (
        budget.workloads["reports"].statement_timeout_ms
        > 8000
        > (budget.app_user.statement_timeout_ms)
    )


def test_pgbouncer_renders_a_users_section_for_the_workloads() -> None:
    settings = _stack({"reports": REPORTS}, {"orders": FAST, "reports": SLOW})
    budget = compute_budget(settings)
    pools = user_pools(budget)
    assert pools == (UserPool("app_user_reports", 2, 3, idle_transaction_timeout_s=10 + 5),)


# -- refusals, with the arithmetic ---------------------------------------------------------------


def test_shares_that_leave_app_user_nothing_are_refused() -> None:
    settings = _stack(
        {"reports": {**REPORTS, "pool_share_percent": 60}, "batch": {"pool_share_percent": 40}},
        {"orders": FAST, "reports": SLOW},
    )
    problems = _violations(settings)
    assert any(
        p.startswith("workloads: pool shares batch 40 + reports 60 = 100% leave the default")
        for p in problems
    ), problems


def test_a_share_under_one_connection_is_refused() -> None:
    settings = _stack(
        {"reports": {**REPORTS, "pool_share_percent": 5}}, {"orders": FAST, "reports": SLOW}
    )
    problems = _violations(settings)
    assert any(
        p.startswith("workloads.reports.pool_share_percent: 5% of the pool of 9 per PgBouncer")
        and "= 0.45, less than one connection" in p
        for p in problems
    ), problems


def test_the_chain_is_checked_against_the_functions_own_workload() -> None:
    # reports' 20 s statement_timeout does not fit a 15 s function: the setting named is the
    # workload's, not app_user's.
    settings = _stack({"reports": REPORTS}, {"orders": FAST, "reports": {**SLOW, "timeout_s": 15}})
    problems = _violations(settings)
    assert any(
        p.startswith("workloads.reports.statement_timeout_ms: statement_timeout 20 s + 1 s")
        and "functions.reports.timeout_s 15 s" in p
        for p in problems
    ), problems


def test_unknown_workloads_roles_in_use_and_the_reserved_name_are_refused() -> None:
    problems = _violations(
        _stack(
            {"reports": {**REPORTS, "role": "app_migrator"}, "default": {"pool_share_percent": 10}},
            {"orders": FAST, "reports": SLOW, "late": {**FAST, "workload": "nightly"}},
        )
    )
    text = "\n".join(problems)
    assert "functions.late.workload: workload 'nightly' is not in `workloads`" in text
    assert "workloads.reports.role: role 'app_migrator' is already app_user.migration_role's" in (
        text
    )
    assert "workloads.default: `default` is the workload of `app_user`" in text


def test_rds_proxy_gives_roles_and_limits_but_warns_the_pool_is_shared() -> None:
    settings = _stack(
        {"reports": REPORTS},
        {"orders": FAST, "reports": SLOW},
        pooler={"kind": "rds-proxy"},
    )
    budget = compute_budget(settings)
    reports = budget.workloads["reports"]
    assert reports.pool_size is None
    assert reports.connection_limit == budget.pooler_server_connections * 30 // 100
    assert budget.app_user.connection_limit == budget.pooler_ceiling - reports.connection_limit
    assert any("RDS Proxy has one connection pool per target group" in w for w in budget.warnings)


# -- the rendered config -------------------------------------------------------------------------


def _ini_settings(**more: Any) -> Any:
    plan = StackPlan.load("dev", base=Path("/nonexistent-state"))
    from dataclasses import replace

    return replace(pgbouncer_settings(plan, PORTS, TLS), **more)


def test_users_section_lines() -> None:
    settings = _ini_settings(
        default_pool_size=2, user_pools=(UserPool("app_user_reports", 1, 2, 35),)
    )
    (text, *_) = render_ini(settings)
    assert text.endswith(
        "\n[users]\napp_user_reports = pool_size=1 max_user_connections=2 "
        "idle_transaction_timeout=35\n"
    )


def test_pools_beyond_max_db_connections_are_refused() -> None:
    # dev: max_db_connections 5 = pool 4 + reserve 1; a user pool of 1 beside 4 does not fit.
    settings = _ini_settings(user_pools=(UserPool("app_user_reports", 1, 2),))
    with pytest.raises(PgBouncerConfigError, match=r"= 6 exceed max_db_connections 5"):
        render_ini(settings)


def test_a_user_pool_needs_the_roles_verifier() -> None:
    settings = _ini_settings(default_pool_size=3, user_pools=(UserPool("app_user_reports", 1, 2),))
    with pytest.raises(PgBouncerConfigError, match="no verifier"):
        render(settings, {})


def test_task_environment_reads_the_user_pools() -> None:
    env = {
        task_env.USER_POOLS_VARIABLE: json.dumps(
            [{"user": "app_user_reports", "pool_size": 2, "max_user_connections": 3}]
        )
    }
    assert task_env.user_pools(env) == (UserPool("app_user_reports", 2, 3),)
    assert task_env.user_pools({}) == ()
    with pytest.raises(task_env.TaskEnvironmentError, match=task_env.USER_POOLS_VARIABLE):
        task_env.user_pools({task_env.USER_POOLS_VARIABLE: '[{"user": "x"}]'})


# -- the drill's choice of functions -------------------------------------------------------------


def test_the_drill_picks_the_fast_and_the_slow_function_from_the_budget() -> None:
    from types import SimpleNamespace

    from slotguard.drills.runner import DrillError
    from slotguard.drills.workloads import choose, percentile

    plan = StackPlan.load("workloads", base=Path("/nonexistent-state"))
    pair = choose(SimpleNamespace(plan=plan))  # type: ignore[arg-type]
    assert (pair.fast, pair.slow, pair.slow_role) == ("orders", "reports", "app_user_reports")
    # 2 local processes x (2 pool + 1 reserve); its pools alone 2 x 2.
    assert (pair.slow_capacity, pair.slow_pool) == (6, 4)
    assert pair.fast_chain_s == 5 + 5 + 1
    assert pair.report_s == 8.0
    dev = StackPlan.load("dev", base=Path("/nonexistent-state"))
    with pytest.raises(DrillError, match=r"Pulumi\.workloads\.yaml"):
        choose(SimpleNamespace(plan=dev))  # type: ignore[arg-type]
    assert percentile([0.1] * 99 + [5.0], 0.99) == 0.1
    assert percentile([0.1] * 98 + [5.0, 6.0], 0.99) == 5.0
