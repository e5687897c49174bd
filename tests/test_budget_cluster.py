"""The budget for Aurora and for a database the team owns: where max_connections comes from, the
read pool, the failover plan and the auto-pause plan. Every AWS figure is cited where it is used.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra import budget_cluster as bc
from infra.budget import RDS_CLASS_MEMORY_GIB, BudgetError, compute_budget
from infra.settings import SettingsError, StackSettings, load_stack, settings_from_mapping

EXISTING_NETWORK = {
    "mode": "existing",
    "vpc_id": "vpc-0a1b2c3d4e5f60718",
    "subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"],
}
EXISTING = {
    "instance_identifier": "orders",
    "master_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders-AbCdEf",
    "security_group_id": "sg-0e1d2c3b4a5f60718",
}


def aurora(**overrides: Any) -> StackSettings:
    raw: dict[str, Any] = {"database": {"kind": "aurora", "aurora": {}}}
    for key, value in overrides.items():
        if key in {"functions", "pooler", "alarms"}:
            raw[key] = value
        elif key in {"max_connections", "reserved_connections", "admin_margin"}:
            raw["database"][key] = value
        else:
            raw["database"]["aurora"][key] = value
    return settings_from_mapping(raw, stack="t")


# -- settings ------------------------------------------------------------------------------------


def test_default_kind_is_the_rds_instance_and_rds_is_an_alias() -> None:
    assert settings_from_mapping({}, stack="t").database.kind == "rds-instance"
    s = settings_from_mapping({"database": {"kind": "rds"}}, stack="t")
    assert s.database.kind == "rds-instance"


def test_existing_example_stacks_budget_as_before() -> None:
    # The kinds are additive: dev and prod derive the same numbers they always did.
    assert compute_budget(load_stack("dev")).max_connections == 25
    prod = compute_budget(load_stack("prod"))
    assert prod.max_connections == 1802
    assert prod.database_kind == "rds-instance"
    assert prod.read_pool is None
    assert prod.failover is None
    assert prod.auto_pause is None


def test_acu_in_half_steps_and_ordered() -> None:
    # "You can specify ACU values in half-step increments ... For Aurora versions that support
    # the Aurora Serverless v2 auto-pause feature, the smallest value that you can use is 0"
    # (RDS API reference, ServerlessV2ScalingConfiguration); auto-pause "between 300 seconds
    # (five minutes) and 86,400 seconds (one day)" (SecondsUntilAutoPause, same page).
    with pytest.raises(SettingsError, match="half steps"):
        aurora(max_capacity_acu=4.2)
    with pytest.raises(SettingsError, match="exceeds max_capacity_acu"):
        aurora(min_capacity_acu=8, max_capacity_acu=4)
    with pytest.raises(SettingsError, match="greater than or equal to 300"):
        aurora(seconds_until_auto_pause=200)
    assert aurora(min_capacity_acu=0).database.aurora.auto_pause


def test_sections_belong_to_their_kind() -> None:
    with pytest.raises(SettingsError, match="applies only to kind `aurora`"):
        settings_from_mapping({"database": {"aurora": {"readers": 1}}}, stack="t")
    with pytest.raises(SettingsError, match="applies only to kind `existing`"):
        settings_from_mapping({"database": {"existing": EXISTING}}, stack="t")


def test_existing_needs_identity_max_connections_and_the_database_vpc() -> None:
    with pytest.raises(SettingsError, match=r"exactly one of existing\.instance_identifier"):
        settings_from_mapping(
            {"network": EXISTING_NETWORK, "database": {"kind": "existing"}}, stack="t"
        )
    with pytest.raises(SettingsError, match="needs max_connections"):
        settings_from_mapping(
            {"network": EXISTING_NETWORK, "database": {"kind": "existing", "existing": EXISTING}},
            stack="t",
        )
    with pytest.raises(SettingsError, match=r"needs network\.mode `existing`"):
        settings_from_mapping(
            {"database": {"kind": "existing", "max_connections": 100, "existing": EXISTING}},
            stack="t",
        )


def test_aurora_parameter_group_family() -> None:
    # Aurora PostgreSQL's parameter group families are `aurora-postgresql<major>` (RDS API
    # reference, DescribeDBEngineVersions: DBParameterGroupFamily, e.g. aurora-postgresql16).
    assert aurora().database.parameter_group_family == "aurora-postgresql16"


# -- max_connections -----------------------------------------------------------------------------


def test_provisioned_aurora_uses_the_memory_formula() -> None:
    # Aurora user guide, "Maximum connections to an Aurora PostgreSQL DB instance": the default
    # is LEAST({DBInstanceClassMemory/9531392}, 5000).
    assert (bc.AURORA_MEMORY_DIVISOR, bc.AURORA_MAX_CONNECTIONS_CAP) == (9_531_392, 5000)
    b = compute_budget(aurora(instance_class="db.r6g.large"))
    assert b.max_connections == int(RDS_CLASS_MEMORY_GIB["db.r6g.large"] * 1024**3) // 9_531_392
    assert b.max_connections_source.startswith("Aurora: LEAST(db.r6g.large 16 GiB/9531392")


def test_unknown_provisioned_class_asks_for_an_explicit_value() -> None:
    with pytest.raises(BudgetError, match=r"database.max_connections: Aurora instance class"):
        compute_budget(aurora(instance_class="db.x2g.large"))


def test_serverless_v2_follows_the_maximum_and_is_capped_by_the_minimum() -> None:
    # Aurora user guide, "Aurora Serverless v2 capacity" / "Maximum connections for Aurora
    # Serverless v2": max_connections derives from the maximum ACUs, and with a minimum of 0 or
    # 0.5 ACU it is capped at 2,000. Table points used (AWS re:Post, "Working of
    # max_connections for Amazon Aurora PostgreSQL Serverless", quoting the table): 1 ACU 189,
    # 16 ACU 3,360, 32 ACU and up 5,000.
    assert bc.serverless_v2_max_connections(1, 1)[0] == 189
    assert bc.serverless_v2_max_connections(1, 16)[0] == 3360
    assert bc.serverless_v2_max_connections(1, 64)[0] == 5000
    capped, source = bc.serverless_v2_max_connections(0.5, 16)
    assert capped == 2000
    assert "capped at 2000 by min 0.5 ACU" in source
    assert bc.serverless_v2_max_connections(0, 32)[0] == 2000
    # Between published points the lower one: 8 ACU is budgeted as 1 ACU's 189, never more.
    assert bc.serverless_v2_max_connections(2, 8)[0] == 189
    b = compute_budget(aurora(min_capacity_acu=0.5, max_capacity_acu=16))
    assert b.max_connections == 2000
    assert "Serverless v2 max 16 ACU" in b.max_connections_source


def test_explicit_max_connections_wins_and_says_so() -> None:
    b = compute_budget(aurora(max_connections=400))
    assert (b.max_connections, b.max_connections_source) == (
        400,
        "explicit setting database.max_connections",
    )


def test_existing_database_budget_names_its_source() -> None:
    b = compute_budget(load_stack("existing"))
    assert b.database_kind == "existing"
    assert b.max_connections == 200
    assert "existing instance orders" in b.max_connections_source
    # 200 - 3 superuser - 2 rds_superuser reserved - 10 admin = 185; the warning alarm (70% = 140 - 2 observers - 1) lowers it.
    assert b.pooler_ceiling == 185
    assert b.pooler_limit == 137


# -- reads ---------------------------------------------------------------------------------------


def test_read_pool_is_budgeted_against_one_reader() -> None:
    b = compute_budget(load_stack("aurora"))
    assert b.read_pool is not None
    assert b.pgbouncer is not None
    rp = b.read_pool
    assert rp.readers == 1
    assert rp.reader_max_connections == b.max_connections  # readers have the writer's class
    assert rp.database_alias == "app_ro"
    peak_processes = b.pgbouncer.deploy.peak_tasks * b.pgbouncer.processes_per_task
    assert rp.max_db_connections == b.pooler_limit // peak_processes
    assert rp.server_connections_peak <= b.pooler_limit
    assert b.function_environment("api")["DB_READ_NAME"] == "app_ro"


def test_no_readers_no_read_path() -> None:
    b = compute_budget(aurora(readers=0))
    assert b.read_pool is None
    assert "DB_READ_NAME" not in b.function_environment("api")


def test_read_path_doubles_the_client_demand() -> None:
    settings = aurora(
        readers=1,
        max_capacity_acu=16,
        pooler={"pgbouncer": {"max_client_conn": 500}},
        functions={"api": {"handler": "functions.api.handler", "reserved_concurrency": 500}},
    )
    with pytest.raises(BudgetError, match=r"2 x \(api 500\) = 1000 exceeds"):
        compute_budget(settings)


# -- failover ------------------------------------------------------------------------------------


def test_failover_plan_reports_who_rides_through() -> None:
    # Aurora endpoints use a 5-second DNS TTL (AWS Database Blog, "Improve application
    # availability on Amazon Aurora"): the pooler re-resolves the writer no later than that.
    assert bc.AURORA_DNS_TTL_S == 5
    b = compute_budget(load_stack("aurora"))
    assert b.failover is not None
    assert b.failover.write_outage_s == 30
    assert b.failover.dns_max_ttl_s == 5
    # api: connect 3 + retry 30 = 33 s >= 30 s; health keeps the default 3 + 4 = 7 s.
    assert b.failover.rides_through == {"api": True, "health": False}
    assert any("functions.health" in w and "30 s" in w for w in b.warnings)


# -- auto-pause ----------------------------------------------------------------------------------


def test_auto_pause_needs_pooler_waits_that_cover_a_resume() -> None:
    # A paused instance resumes in about 15 s, about 30 s after more than a day paused (AWS
    # agent toolkit for AWS, Aurora serverless advisory concepts: "Resume latency: ~15s if paused
    # <24h, ~30s if paused >24h"; Aurora user guide, "Scaling to Zero ACUs with automatic pause
    # and resume for Aurora Serverless v2").
    assert (bc.AUTO_PAUSE_RESUME_S, bc.AUTO_PAUSE_RESUME_LONG_S) == (15, 30)
    with pytest.raises(BudgetError) as caught:
        compute_budget(aurora(min_capacity_acu=0, max_capacity_acu=4))
    message = str(caught.value)
    assert "pooler.pgbouncer.query_wait_timeout_s: 5 s is shorter than the 15 s" in message
    assert "pooler.pgbouncer.server_connect_timeout_s: 5 s is shorter" in message


def test_auto_pause_refuses_idle_connections_that_keep_it_awake() -> None:
    settings = aurora(
        min_capacity_acu=0,
        seconds_until_auto_pause=300,
        pooler={
            "pgbouncer": {
                "server_idle_timeout_s": 600,
                "query_wait_timeout_s": 15,
                "server_connect_timeout_s": 15,
            }
        },
        functions={
            "api": {"handler": "functions.api.handler", "timeout_s": 30, "retry_budget_s": 10}
        },
    )
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings)
    assert (
        "pooler.pgbouncer.server_idle_timeout_s: server_idle_timeout 600 s is not below "
        "seconds_until_auto_pause 300 s"
    ) in str(caught.value)


def test_auto_pause_that_fits_is_planned_and_warned_about_long_pauses() -> None:
    settings = aurora(
        min_capacity_acu=0,
        max_capacity_acu=4,
        pooler={"pgbouncer": {"query_wait_timeout_s": 15, "server_connect_timeout_s": 15}},
        functions={
            "api": {"handler": "functions.api.handler", "timeout_s": 30, "retry_budget_s": 10}
        },
    )
    b = compute_budget(settings)
    assert b.auto_pause is not None
    assert b.auto_pause.server_idle_timeout_s < b.auto_pause.seconds_until_auto_pause
    assert any("more than a day paused" in w for w in b.warnings)
    keys = {f.key for f in b.figures}
    assert {"auto_pause.server_idle_timeout", "auto_pause.resume"} <= keys


def test_auto_pause_with_rds_proxy_is_refused() -> None:
    # RDS Proxy keeps connections to its targets open; Aurora Serverless v2 auto-pause lists
    # RDS Proxy as incompatible (AWS agent toolkit for AWS, Aurora serverless advisory
    # concepts, "Scale-to-Zero (Auto-Pause) ... Incompatible with: RDS Proxy").
    with pytest.raises(BudgetError, match=r"0 ACU \(auto-pause\) with pooler\.kind rds-proxy"):
        compute_budget(aurora(min_capacity_acu=0, pooler={"kind": "rds-proxy"}))


def test_settings_survive_a_dump_and_reload() -> None:
    # A dump holds every section at its defaults; reading it back must not trip the kind check.
    for stack in ("dev", "aurora", "existing"):
        s = load_stack(stack)
        again = settings_from_mapping(
            s.model_dump(mode="json", exclude={"stack", "region"}), stack=stack, region=s.region
        )
        assert again == s
