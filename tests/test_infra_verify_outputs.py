"""The stack outputs `slotguard verify` reads, under the Pulumi mocks, for every example variant."""

from __future__ import annotations

import functools

import pytest

from infra.offline import KIND_VARIANTS, VARIANTS, OfflineRun, run_offline, variant_settings


@functools.cache
def stack(variant: str) -> OfflineRun:
    return run_offline(variant_settings(variant))


@pytest.mark.parametrize("variant", [*VARIANTS, *KIND_VARIANTS])
def test_verify_outputs_name_the_resources_the_program_declared(variant: str) -> None:
    run = stack(variant)
    out = run.outputs
    settings = variant_settings(variant)
    if settings.database.kind == "aurora":
        cluster_ = run.one("aws:rds/cluster:Cluster")
        assert out["database_identifier"] == cluster_.outputs["clusterIdentifier"]
        instances = run.of_type("aws:rds/clusterInstance:ClusterInstance")
        assert sorted(out["database_instance_identifiers"].values()) == sorted(
            i.outputs["identifier"] for i in instances
        )
    elif settings.database.kind == "existing":
        assert out["database_identifier"] == settings.database.existing.identifier
    else:
        instance = run.one("aws:rds/instance:Instance")
        assert out["database_identifier"] == instance.outputs["identifier"]
    bootstrap = run.one("aws:lambda/function:Function", "-bootstrap-function")
    assert out["bootstrap_function_name"] == bootstrap.outputs["name"]
    alarms = run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarms
    assert sorted(out["alarm_names"]) == sorted(a.outputs["name"] for a in alarms)
    if settings.pooler.kind == "pgbouncer":
        cluster = run.one("aws:ecs/cluster:Cluster")
        service = run.one("aws:ecs/service:Service")
        group_tg = run.one("aws:lb/targetGroup:TargetGroup")
        assert out["ecs_cluster_name"] == cluster.outputs["name"]
        assert out["ecs_service_name"] == service.outputs["name"]
        assert out["target_group_arn"] == group_tg.outputs["arn"]
        assert service.input("loadBalancers")[0]["targetGroupArn"] == out["target_group_arn"]
        assert "proxy_name" not in out
    else:
        proxy = run.one("aws:rds/proxy:Proxy")
        assert out["proxy_name"] == proxy.outputs["name"]
        assert "ecs_cluster_name" not in out


@pytest.mark.parametrize("variant", [*VARIANTS, *KIND_VARIANTS])
def test_reserved_concurrency_total_is_what_the_program_reserves(variant: str) -> None:
    from infra.budget import BOOTSTRAP_RESERVED_CONCURRENCY, compute_budget

    run = stack(variant)
    budget = compute_budget(variant_settings(variant))
    functions = run.of_type("aws:lambda/function:Function")
    reserved = [f.input("reservedConcurrentExecutions") for f in functions]
    # -1 is the provider's "no reservation"; every other value is a real reservation.
    assert all(isinstance(r, int) and (r > 0 or r == -1) for r in reserved), reserved
    bootstrap = run.one("aws:lambda/function:Function", "-bootstrap-function")
    expected = budget.bootstrap_reserved_concurrency
    assert bootstrap.input("reservedConcurrentExecutions") == (
        -1 if expected is None else BOOTSTRAP_RESERVED_CONCURRENCY
    )
    assert sum(r for r in reserved if r > 0) == budget.reserved_concurrency_total
