"""The PgBouncer service's deploy and scaling plan, rendered under Pulumi mocks, and the AWS and
PgBouncer facts it relies on, each with its source."""

from __future__ import annotations

import functools
import inspect
import json
import subprocess

import pulumi_aws as aws
import pytest

from infra.budget import (
    DRAIN_MARGIN_S,
    FARGATE_STOP_TIMEOUT_MAX_S,
    NLB_IDLE_TIMEOUT_S,
    BudgetError,
    compute_budget,
    deployment_percents,
    peak_tasks,
)
from infra.offline import OfflineRun, run_offline, variant_settings
from infra.settings import settings_from_mapping
from pgbouncer import environment as task_env
from slotguard.local.system import pgbouncer_binary

SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
SCALING_TARGET = "aws:appautoscaling/target:Target"
SCALING_POLICY = "aws:appautoscaling/policy:Policy"


@functools.cache
def dev() -> OfflineRun:
    return run_offline(variant_settings("dev"))


@functools.cache
def scaling() -> OfflineRun:
    base = variant_settings("dev")
    pooler = base.pooler.model_copy(
        update={"pgbouncer": base.pooler.pgbouncer.model_copy(update={"max_tasks": 4})}
    )
    return run_offline(base.model_copy(update={"pooler": pooler, "stack": "scaling"}))


# -- facts, each with its source -------------------------------------------------------------------


def test_fargate_stop_timeout_is_at_most_120_s() -> None:
    # "For tasks that use the Fargate launch type, the max stop timeout value is 120 seconds and
    # if the parameter is not specified, the default value of 30 seconds is used."
    # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html
    # (ContainerDefinition.stopTimeout)
    assert FARGATE_STOP_TIMEOUT_MAX_S == 120
    with pytest.raises(Exception, match="120"):
        settings_from_mapping({"pooler": {"pgbouncer": {"stop_timeout_s": 121}}}, stack="t")


def test_deployment_percent_rounding_is_ecs() -> None:
    # "maximumPercent ... upper limit on the number of tasks in a service that are allowed in
    # the RUNNING or PENDING state during a deployment, as a percentage of the desired number of
    # tasks (rounded down to the nearest integer)"; minimumHealthyPercent "... (rounded up to the
    # nearest integer)". https://docs.aws.amazon.com/AmazonECS/latest/APIReference/
    # API_DeploymentConfiguration.html
    for tasks in range(1, 21):
        for surge in range(0, 5):
            maximum, minimum = deployment_percents(tasks, surge)
            running_at_most = tasks * maximum // 100  # rounded down
            healthy_at_least = -(-tasks * minimum // 100)  # rounded up
            if surge:
                assert running_at_most == tasks + surge
                assert healthy_at_least == tasks  # nothing stops before its replacement
            else:
                assert running_at_most == tasks
                assert healthy_at_least == tasks - 1  # one at a time, or no deploy could start
    assert peak_tasks(4, 150) == 6


def test_nlb_deregistration_delay_range_and_connection_termination_default() -> None:
    # pulumi-aws `lb.TargetGroup.deregistration_delay`: "The range is 0-3600 seconds. The
    # default value is 300 seconds." `connection_termination`: "Whether to terminate connections
    # at the end of the deregistration timeout on Network Load Balancers ... Default is false."
    # (https://docs.aws.amazon.com/elasticloadbalancing/latest/network/
    # load-balancer-target-groups.html#deregistration-delay)
    doc = inspect.getdoc(aws.lb.TargetGroup.deregistration_delay.fget) or ""  # type: ignore[attr-defined]
    assert "0-3600 seconds" in doc
    assert "300 seconds" in doc
    termination = inspect.getdoc(aws.lb.TargetGroup.connection_termination.fget) or ""  # type: ignore[attr-defined]
    assert "Default is `false`" in termination
    with pytest.raises(Exception, match="3600"):
        settings_from_mapping(
            {"pooler": {"pgbouncer": {"deregistration_delay_s": 3601}}}, stack="t"
        )


def test_nlb_idle_timeout_is_350_s() -> None:
    # "Network Load Balancer ... idle timeout for TCP flows is 350 seconds."
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/network/network-load-balancers.html
    # (Connection idle timeout)
    assert NLB_IDLE_TIMEOUT_S == 350


def test_availability_zone_rebalancing_field_and_its_default() -> None:
    # pulumi-aws `ecs.Service.availability_zone_rebalancing` (terraform-provider-aws
    # `availability_zone_rebalancing`): "The valid values are `ENABLED` and `DISABLED`. When
    # creating a new service, if no value is specified, it defaults to `ENABLED` if the service
    # is compatible with AvailabilityZoneRebalancing." AWS: https://docs.aws.amazon.com/
    # AmazonECS/latest/developerguide/service-rebalancing.html (rebalancing starts tasks in the
    # under-used AZ and stops others, so it needs maximumPercent above 100 and moves tasks
    # outside any deploy).
    doc = inspect.getdoc(aws.ecs.Service.availability_zone_rebalancing.fget) or ""  # type: ignore[attr-defined]
    assert "`ENABLED` and `DISABLED`" in doc
    assert "defaults to `ENABLED`" in doc


def test_target_tracking_metric_is_ecs_service_average_cpu() -> None:
    # Predefined metric `ECSServiceAverageCPUUtilization` on scalable dimension
    # `ecs:service:DesiredCount`, resource id `service/<cluster>/<service>`:
    # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/target-tracking-create-policy.html
    # and the AWS CLI example application-autoscaling put-scaling-policy.
    run = scaling()
    (policy,) = run.of_type(SCALING_POLICY)
    config = policy.input("targetTrackingScalingPolicyConfiguration")
    spec = config["predefinedMetricSpecification"]
    assert spec["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert policy.input("policyType") == "TargetTrackingScaling"


def test_pgbouncer_signals_of_the_pinned_version() -> None:
    # PgBouncer doc/usage.md (1.23+): "SIGTERM: Super safe shutdown. Wait for all existing
    # clients to disconnect ... In PgBouncer versions earlier than 1.23.0, this signal would
    # cause an immediate shutdown." "SIGINT: Safe shutdown. Same as issuing SHUTDOWN
    # WAIT_FOR_SERVERS" ("Stop accepting new connections and shutdown after all servers are
    # released"). NEWS.md 1.23.0: "SIGTERM doesn't cause immediate shutdown ... anymore".
    # Clients under a storm never all disconnect, so the entrypoint sends SIGINT.
    source = inspect.getsource(__import__("pgbouncer.entrypoint", fromlist=["x"]))
    assert "self._send(signal.SIGINT)" in source
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("no local pgbouncer")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    assert "PgBouncer" in out.stdout


# -- the deploy plan, rendered -------------------------------------------------------------------


def test_service_renders_the_deploy_plan() -> None:
    run = dev()
    pb = run.budget.pgbouncer
    assert pb is not None
    d = pb.deploy
    service = run.one(SERVICE)
    assert service.input("desiredCount") == d.min_tasks
    assert service.input("deploymentMaximumPercent") == d.maximum_percent == 150
    assert service.input("deploymentMinimumHealthyPercent") == d.minimum_healthy_percent == 100
    assert service.input("availabilityZoneRebalancing") == "DISABLED"
    # The most tasks ECS may run equals what every pool was sized for.
    assert d.min_tasks * d.maximum_percent // 100 == d.peak_tasks == 3
    assert d.server_connections_peak == run.budget.pooler_planned_max <= run.budget.pooler_limit


def test_task_definition_and_target_group_render_the_stop_sequence() -> None:
    run = dev()
    pb = run.budget.pgbouncer
    assert pb is not None
    d = pb.deploy
    (container,) = json.loads(run.one(TASK).input("containerDefinitions"))
    assert container["stopTimeout"] == d.stop_timeout_s <= FARGATE_STOP_TIMEOUT_MAX_S
    env = {e["name"]: e["value"] for e in container["environment"]}
    drain = float(env[f"{task_env.PREFIX}DRAIN_TIMEOUT_S"])
    assert drain == d.stop_timeout_s - DRAIN_MARGIN_S >= d.longest_transaction_s
    group = run.one(TARGET_GROUP)
    assert group.input("deregistrationDelay") == d.deregistration_delay_s
    # Connections a stopping task still holds are closed by PgBouncer after their transaction,
    # never reset by the NLB mid-transaction.
    assert group.input("connectionTermination") is False
    health = group.input("healthCheck")
    assert health["protocol"] == "TCP"
    assert health["healthyThreshold"] == 2
    # A fixed-size service has no scaling resources.
    assert run.of_type(SCALING_TARGET) == []


def test_scaling_renders_target_tracking_between_tasks_and_max_tasks() -> None:
    run = scaling()
    pb = run.budget.pgbouncer
    assert pb is not None
    d = pb.deploy
    (target,) = run.of_type(SCALING_TARGET)
    assert target.input("minCapacity") == d.min_tasks == 2
    assert target.input("maxCapacity") == d.max_tasks == 4
    assert target.input("scalableDimension") == "ecs:service:DesiredCount"
    assert target.input("serviceNamespace") == "ecs"
    assert str(target.input("resourceId")).startswith("service/")
    (policy,) = run.of_type(SCALING_POLICY)
    config = policy.input("targetTrackingScalingPolicyConfiguration")
    assert config["targetValue"] == d.cpu_target_percent
    # Pools sized for 4 tasks plus a deploy's surge at 150 %: 6 tasks within the limit.
    assert d.peak_tasks == 6
    assert d.server_connections_peak <= run.budget.pooler_limit
    assert pb.pool_size < d.pool_size_if_fixed  # the trade, shown by `slotguard budget`


def test_a_stop_timeout_too_short_for_the_longest_transaction_is_refused() -> None:
    raw = {"pooler": {"pgbouncer": {"stop_timeout_s": 15}}}
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings_from_mapping(raw, stack="t"))
    (violation,) = [v for v in caught.value.violations if "stop_timeout" in v.setting]
    assert violation.setting == "pooler.pgbouncer.stop_timeout_s"
    assert "safe shutdown of 10 s (stop_timeout_s 15 - 5)" in violation.message
    assert "function api timeout 15 s" in violation.message


def test_alarm_that_cannot_sit_above_the_pooler_is_refused_with_the_arithmetic() -> None:
    raw = {
        "database": {"max_connections": 12, "reserved_connections": 2, "admin_margin": 2},
        "alarms": {"warn_percent": 30, "critical_percent": 80},
    }
    with pytest.raises(BudgetError) as caught:
        compute_budget(settings_from_mapping(raw, stack="t"))
    named = {v.setting: v.message for v in caught.value.violations}
    assert "alarms.warn_percent" in named
    assert (
        "30% of max_connections 12 = 4 connections leaves the pooler 1"
        in named["alarms.warn_percent"]
    )
