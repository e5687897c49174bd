"""The Aurora example stack under Pulumi mocks: the cluster, its instances, parameter groups,
alarms, and the policy pack. Provider argument names are cited from pulumi-aws's docstrings.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pulumi_aws as aws
import pytest

from infra.budget import compute_budget
from infra.offline import OfflineRun, run_offline
from infra.settings import load_stack, settings_from_mapping
from policy.offline import check_stack, evaluate, to_policy_resources

CLUSTER = "aws:rds/cluster:Cluster"
CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"


@pytest.fixture(scope="module")
def aurora_run() -> OfflineRun:
    return run_offline(load_stack("aurora"))


def test_provider_arguments_exist() -> None:
    # pulumi-aws `rds.Cluster`: `serverlessv2_scaling_configuration` with `min_capacity`,
    # `max_capacity` ("Valid capacity values are in a range of `0` up to `256` in steps of
    # `0.5`") and `seconds_until_auto_pause` ("Valid values are `300` through `86400`");
    # `rds.ClusterInstance` takes `db_parameter_group_name` and `promotion_tier`.
    doc = inspect.getdoc(aws.rds.ClusterServerlessv2ScalingConfigurationArgs.__init__) or ""
    assert "steps of `0.5`" in doc
    assert "`300` through `86400`" in doc
    cluster_args = inspect.signature(aws.rds.Cluster._internal_init).parameters
    for name in (
        "serverlessv2_scaling_configuration",
        "manage_master_user_password",
        "db_cluster_parameter_group_name",
        "storage_encrypted",
    ):
        assert name in cluster_args
    # The cluster takes the major version only, like the instance (pulumi-aws `rds.Cluster`
    # engine_version: "The value can contain a partial version where supported by the API. The
    # actual engine version used is returned in the attribute `engine_version_actual`").
    source = " ".join(Path(inspect.getfile(aws.rds.Cluster)).read_text().split())
    assert "The value can contain a partial version where supported by the API." in source
    assert "returned in the attribute `engine_version_actual`" in source
    instance_args = inspect.signature(aws.rds.ClusterInstance._internal_init).parameters
    assert {"db_parameter_group_name", "promotion_tier", "instance_class"} <= set(instance_args)


def test_cluster_is_encrypted_serverless_and_private(aurora_run: OfflineRun) -> None:
    cluster = aurora_run.one(CLUSTER)
    assert cluster.input("engine") == "aurora-postgresql"
    assert cluster.input("engineMode") == "provisioned"
    assert cluster.input("storageEncrypted") is True
    assert cluster.input("manageMasterUserPassword") is True
    scaling = cluster.input("serverlessv2ScalingConfiguration")
    assert scaling["minCapacity"] == 0.5
    assert scaling["maxCapacity"] == 16
    # Auto-pause is off (min 0.5), so no pause delay is sent.
    assert "secondsUntilAutoPause" not in scaling or scaling["secondsUntilAutoPause"] is None
    instances = aurora_run.of_type(CLUSTER_INSTANCE)
    assert sorted(i.name for i in instances) == [
        "slotguard-aurora-reader-1",
        "slotguard-aurora-writer",
    ]
    for instance in instances:
        assert instance.input("instanceClass") == "db.serverless"
        assert instance.input("publiclyAccessible") is False
    tiers = {i.name.split("slotguard-aurora-")[1]: i.input("promotionTier") for i in instances}
    assert tiers == {"writer": 0, "reader-1": 1}


def test_parameter_groups_carry_tls_scram_and_the_budget(aurora_run: OfflineRun) -> None:
    budget = compute_budget(aurora_run.settings)
    cluster_group = aurora_run.one("aws:rds/clusterParameterGroup:ClusterParameterGroup")
    assert cluster_group.input("family") == "aurora-postgresql16"
    cluster_params = {p["name"]: p["value"] for p in cluster_group.input("parameters")}
    assert cluster_params == {"rds.force_ssl": "1", "password_encryption": "scram-sha-256"}
    group = aurora_run.one("aws:rds/parameterGroup:ParameterGroup")
    assert group.input("family") == "aurora-postgresql16"
    params = {p["name"]: p["value"] for p in group.input("parameters")}
    assert params["max_connections"] == str(budget.max_connections) == "2000"
    # One instance-level group for every instance: each has the same ceiling, so a failover
    # moves no number (the mocks leave the auto-generated group name unknown, as a preview does).
    assert len(aurora_run.of_type("aws:rds/parameterGroup:ParameterGroup")) == 1


def test_auto_pause_sends_the_delay() -> None:
    settings = settings_from_mapping(
        {
            "database": {
                "kind": "aurora",
                "aurora": {"min_capacity_acu": 0, "max_capacity_acu": 4, "readers": 0},
            },
            "pooler": {"pgbouncer": {"query_wait_timeout_s": 15, "server_connect_timeout_s": 15}},
            "functions": {
                "api": {"handler": "functions.api.handler", "timeout_s": 30, "retry_budget_s": 12}
            },
        },
        stack="pause",
        region="eu-west-1",
    )
    run = run_offline(settings)
    scaling = run.one(CLUSTER).input("serverlessv2ScalingConfiguration")
    assert scaling["minCapacity"] == 0
    assert scaling["secondsUntilAutoPause"] == 3600
    assert len(run.of_type(CLUSTER_INSTANCE)) == 1


def test_pooler_and_bootstrap_point_at_the_cluster_endpoint(aurora_run: OfflineRun) -> None:
    cluster = aurora_run.one(CLUSTER)
    bootstrap = next(
        f
        for f in aurora_run.of_type("aws:lambda/function:Function")
        if f.input("handler") == "functions.bootstrap.handler"
    )
    env = bootstrap.input("environment")["variables"]
    assert env["DB_HOST"] == cluster.outputs["endpoint"]
    assert aurora_run.outputs["database_is_cluster"] is True
    assert set(aurora_run.outputs["database_instance_identifiers"]) == {"writer", "reader-1"}


def test_alarms_watch_every_instance_and_the_capacity(aurora_run: OfflineRun) -> None:
    # CloudWatch metrics for Aurora: DatabaseConnections and ACUUtilization are published per
    # instance (dimension DBInstanceIdentifier) and per cluster (DBClusterIdentifier);
    # ServerlessDatabaseCapacity and ACUUtilization are the Serverless v2 capacity metrics
    # (Aurora user guide, "Important Amazon CloudWatch metrics for Aurora Serverless v2").
    alarms = {
        a.input("name").removeprefix("slotguard-aurora-"): a
        for a in aurora_run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.input("namespace") == "AWS/RDS"
    }
    ids = aurora_run.outputs["database_instance_identifiers"]
    for key in ("db-connections-warn", "db-connections-critical", "db-acu-utilization"):
        assert alarms[key].input("dimensions") == {"DBInstanceIdentifier": ids["writer"]}
        reader = alarms[f"{key}-reader-1"]
        assert reader.input("dimensions") == {"DBInstanceIdentifier": ids["reader-1"]}
    assert alarms["db-acu-utilization"].input("metricName") == "ACUUtilization"
    assert alarms["db-acu-utilization"].input("threshold") == 90
    body = json.loads(aurora_run.one("aws:cloudwatch/dashboard:Dashboard").input("dashboardBody"))
    lines = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    cluster_id = aurora_run.outputs["database_identifier"]
    assert ["AWS/RDS", "DatabaseConnections", "DBClusterIdentifier", cluster_id] in lines
    assert ["AWS/RDS", "ServerlessDatabaseCapacity", "DBClusterIdentifier", cluster_id] in lines


def test_aurora_stack_passes_the_policy_pack() -> None:
    report = check_stack("aurora")
    assert report.violations == []
    assert {"aurora-cluster", "existing-database-untouched"} <= set(report.policies)


def test_aurora_rule_refuses_an_unencrypted_cluster(aurora_run: OfflineRun) -> None:
    resources = to_policy_resources(aurora_run.resources)
    for r in resources:
        if r.resource_type == CLUSTER:
            r.props = {**r.props, "storageEncrypted": False}
    report = evaluate(resources, "aurora")
    assert [v.policy for v in report.violations] == ["aurora-cluster"]
    assert "not encrypted at rest" in report.violations[0].message


def test_instance_stacks_have_no_cluster() -> None:
    run = run_offline(load_stack("dev"))
    assert run.of_type(CLUSTER) == []
    assert run.of_type(CLUSTER_INSTANCE) == []
    assert "database_kind" not in run.outputs


def test_the_endpoint_policy_admits_the_cluster_master_secret(aurora_run: OfflineRun) -> None:
    # The bootstrap reads the cluster's RDS-managed master secret through the Secrets Manager
    # endpoint; the dev stack's policy (slotguard/*, rds!db-*) is left as it was.
    endpoint = aurora_run.one("aws:ec2/vpcEndpoint:VpcEndpoint", "-vpce-secretsmanager")
    resources = json.loads(endpoint.input("policy"))["Statement"][0]["Resource"]
    assert [r.split(":secret:")[1] for r in resources] == [
        "slotguard/*",
        "rds!db-*",
        "rds!cluster-*",
    ]


def test_no_network_path_from_functions_to_the_cluster(aurora_run: OfflineRun) -> None:
    # The pack's network rule sees the cluster's security group: a rule opening it to the
    # functions is refused, as for an RDS instance.
    records = list(aurora_run.resources)
    resources = to_policy_resources(records)
    functions_sg = next(r for r in resources if r.name.endswith("-sg-functions"))
    database_sg = next(r for r in resources if r.name.endswith("-sg-db"))
    rule = next(
        r
        for r in resources
        if r.resource_type.endswith("SecurityGroupIngressRule") and r.name.endswith("in-pooler-db")
    )
    rule.props = {
        **rule.props,
        "referencedSecurityGroupId": functions_sg.props.get("id") or "sg-fn",
    }
    rule.property_dependencies = {
        "securityGroupId": [database_sg],
        "referencedSecurityGroupId": [functions_sg],
    }
    report = evaluate(resources, "aurora")
    found = [v for v in report.violations if v.policy == "no-direct-network-path"]
    assert found
    assert "opens a path from the functions" in found[0].message


def test_a_production_cluster_is_protected() -> None:
    settings = settings_from_mapping(
        {
            "environment": "prod",
            "database": {
                "kind": "aurora",
                "aurora": {"instance_class": "db.r6g.large", "readers": 1},
            },
            "pooler": {"kind": "rds-proxy"},
        },
        stack="prod-aurora",
        region="eu-west-1",
    )
    run = run_offline(settings)
    cluster = run.one(CLUSTER)
    assert cluster.input("deletionProtection") is True
    assert cluster.input("skipFinalSnapshot") is False
    assert cluster.input("backupRetentionPeriod") == 7
    assert cluster.input("enabledCloudwatchLogsExports") == ["postgresql"]
    # RDS Proxy registers the cluster, and readers get the read-only proxy endpoint.
    target = run.one("aws:rds/proxyTarget:ProxyTarget")
    assert target.input("dbClusterIdentifier") == cluster.outputs["clusterIdentifier"]
    assert target.input("dbInstanceIdentifier") is None
    assert run.one("aws:rds/proxyEndpoint:ProxyEndpoint").input("targetRole") == "READ_ONLY"
    report = evaluate(to_policy_resources(run.resources), "prod-aurora")
    assert report.violations == []
