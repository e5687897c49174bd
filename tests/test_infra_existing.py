"""A stack around a database the team owns: looked up at preview, never managed.

Offline under Pulumi mocks (the provider look-ups answered by infra/offline.py), the policy pack,
and the RDS/EC2 checks of preflight and verify against moto.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.budget import compute_budget
from infra.existing_lookup import FormulaError, evaluate, refusal
from infra.offline import MockAccount, OfflineRun, run_offline
from infra.settings import SettingsError, StackSettings, load_stack, settings_from_mapping
from policy.offline import check_stack, to_policy_resources
from policy.offline import evaluate as evaluate_policy
from slotguard.aws.checks import Status
from slotguard.aws.preflight_database import existing_database_checks
from slotguard.aws.verify_database import database_checks
from tests.aws_stubs import aws_client

RDS_TYPES_NEVER_IN_THE_STACK = (
    "aws:rds/instance:Instance",
    "aws:rds/cluster:Cluster",
    "aws:rds/clusterInstance:ClusterInstance",
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:rds/clusterParameterGroup:ClusterParameterGroup",
    "aws:rds/subnetGroup:SubnetGroup",
)


@pytest.fixture(scope="module")
def existing_run() -> OfflineRun:
    return run_offline(load_stack("existing"))


def with_database(**changes: Any) -> StackSettings:
    s = load_stack("existing")
    raw = s.model_dump(mode="json", exclude={"stack", "region"})
    raw["database"]["existing"] = {
        k: v for k, v in raw["database"]["existing"].items() if v is not None
    }
    for key, value in changes.items():
        raw["database"]["existing"][key] = value
    if "cluster_identifier" in changes:
        raw["database"]["existing"].pop("instance_identifier")
    del raw["database"]["aurora"]
    return settings_from_mapping(raw, stack="existing", region="eu-west-1")


# -- the program ---------------------------------------------------------------------------------


def test_the_stack_owns_no_rds_resource(existing_run: OfflineRun) -> None:
    for type_ in RDS_TYPES_NEVER_IN_THE_STACK:
        assert existing_run.of_type(type_) == [], type_
    # It looked the instance up instead (a provider invoke, as at `pulumi preview`).
    assert existing_run.outputs["database_identifier"] == "orders"
    assert existing_run.outputs["database_kind"] == "existing"


def test_the_only_outside_change_is_two_named_ingress_rules(existing_run: OfflineRun) -> None:
    sg = load_stack("existing").database.existing.security_group_id
    on_database = [
        r
        for r in existing_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.input("securityGroupId") == sg
    ]
    assert sorted(r.name for r in on_database) == [
        "slotguard-existing-in-bootstrap-db",
        "slotguard-existing-in-pooler-db",
    ]
    for rule in on_database:
        assert rule.input("description").startswith("slotguard existing: ")
        assert rule.input("fromPort") == rule.input("toPort") == 5432
        assert rule.input("referencedSecurityGroupId")  # a group, never a CIDR
    # The stack creates no database security group of its own.
    assert not any(
        r.name.endswith("-sg-db")
        for r in existing_run.of_type("aws:ec2/securityGroup:SecurityGroup")
    )


def test_pooler_and_bootstrap_use_the_found_endpoint(existing_run: OfflineRun) -> None:
    bootstrap = next(
        f
        for f in existing_run.of_type("aws:lambda/function:Function")
        if f.input("handler") == "functions.bootstrap.handler"
    )
    env = bootstrap.input("environment")["variables"]
    assert env["DB_HOST"].startswith("orders.c")
    assert env["DB_HOST"].endswith(".rds.amazonaws.com")
    assert env["MASTER_SECRET_ARN"] == load_stack("existing").database.existing.master_secret_arn
    # The bootstrap creates app_user and the migrator as on a new database.
    event = compute_budget(load_stack("existing")).bootstrap_event("app")
    assert event["app_user"]["connection_limit"] == 185
    assert event["migration_role"] == {"name": "app_migrator"}


def test_an_existing_cluster_is_looked_up_with_its_members() -> None:
    run = run_offline(with_database(cluster_identifier="orders"))
    assert run.outputs["database_is_cluster"] is True
    assert run.outputs["database_instance_identifiers"] == {
        "orders-1": "orders-1",
        "orders-2": "orders-2",
    }
    alarms = [
        a.input("dimensions")
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.input("metricName") == "DatabaseConnections"
    ]
    assert {"DBInstanceIdentifier": "orders-2"} in alarms


@pytest.mark.parametrize(
    ("account", "setting", "words"),
    [
        (
            MockAccount(existing_engine_version="15.8"),
            "database.engine_version",
            'set engine_version to "15"',
        ),
        (MockAccount(existing_port=5433), "database.port", "listens on 5433"),
        (
            MockAccount(existing_security_groups=("sg-0ffffffffffffffff",)),
            "database.existing.security_group_id",
            "not one of instance orders's security groups",
        ),
        (
            MockAccount(missing_databases=frozenset({"orders"})),
            "database.existing.instance_identifier",
            "cannot look up 'orders'",
        ),
    ],
)
def test_preview_refuses_what_does_not_fit(account: MockAccount, setting: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        run_offline(load_stack("existing"), account=account)
    message = str(caught.value)
    assert setting in message
    assert words in message


# -- the policy pack -----------------------------------------------------------------------------


def test_existing_stack_passes_the_policy_pack() -> None:
    assert check_stack("existing").violations == []


def test_policy_refuses_any_rds_resource_beside_an_existing_database(
    existing_run: OfflineRun,
) -> None:
    dev = run_offline(load_stack("dev"))
    instance = dev.one("aws:rds/instance:Instance")
    records = [*existing_run.resources, dataclasses.replace(instance, parent=None, dependencies=())]
    report = evaluate_policy(to_policy_resources(records), "existing")
    untouched = [v for v in report.violations if v.policy == "existing-database-untouched"]
    assert len(untouched) == 1
    assert "must never modify, replace or delete" in untouched[0].message
    assert untouched[0].resource.startswith("aws:rds/instance:Instance")


# -- max_connections from parameter groups -------------------------------------------------------


def test_formula_values_are_evaluated() -> None:
    # RDS's default for PostgreSQL: LEAST({DBInstanceClassMemory/9531392},5000) (RDS user
    # guide, "Maximum number of database connections").
    gib16 = 16 * 1024**3
    assert evaluate("200", None) == 200
    assert evaluate("LEAST({DBInstanceClassMemory/9531392},5000)", gib16) == 1802
    assert evaluate("GREATEST({DBInstanceClassMemory/9531392},100)", 1024**3) == 112
    with pytest.raises(FormulaError, match="not in the kit's memory table"):
        evaluate("LEAST({DBInstanceClassMemory/9531392},5000)", None)
    with pytest.raises(FormulaError, match="cannot evaluate"):
        evaluate("__import__('os')", gib16)


def _database(max_connections: str, *, sg_rules: int = 0) -> dict[str, str]:
    """An RDS instance in moto with its parameter group, subnets and security group."""
    ec2, rds = aws_client("ec2"), aws_client("rds")
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.50.{i}.0/24", AvailabilityZone=f"eu-west-1{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    sg = ec2.create_security_group(GroupName="orders-db", Description="db", VpcId=vpc)["GroupId"]
    for port in range(sg_rules):
        ec2.authorize_security_group_ingress(
            GroupId=sg,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 1000 + port,
                    "ToPort": 1000 + port,
                    "IpRanges": [{"CidrIp": f"10.9.{port}.0/24"}],
                }
            ],
        )
    rds.create_db_subnet_group(
        DBSubnetGroupName="orders", DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    rds.create_db_parameter_group(
        DBParameterGroupName="orders-params", DBParameterGroupFamily="postgres16", Description="x"
    )
    rds.modify_db_parameter_group(
        DBParameterGroupName="orders-params",
        Parameters=[
            {
                "ParameterName": "max_connections",
                "ParameterValue": max_connections,
                "ApplyMethod": "pending-reboot",
            }
        ],
    )
    rds.create_db_instance(
        DBInstanceIdentifier="orders",
        DBInstanceClass="db.r6g.large",
        Engine="postgres",
        EngineVersion="16.4",
        AllocatedStorage=20,
        MasterUsername="postgres",
        MasterUserPassword="not-used-here",
        DBSubnetGroupName="orders",
        DBParameterGroupName="orders-params",
        VpcSecurityGroupIds=[sg],
    )
    return {"vpc": vpc, "sg": sg, "subnet0": subnets[0], "subnet1": subnets[1]}


def _settings_for(found: dict[str, str], max_connections: int = 200) -> StackSettings:
    return settings_from_mapping(
        {
            "network": {
                "mode": "existing",
                "vpc_id": found["vpc"],
                "subnet_ids": [found["subnet0"], found["subnet1"]],
            },
            "database": {
                "kind": "existing",
                "max_connections": max_connections,
                "admin_margin": 10,
                "existing": {
                    "instance_identifier": "orders",
                    "master_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x",
                    "security_group_id": found["sg"],
                },
            },
        },
        stack="existing",
        region="eu-west-1",
    )


def test_preflight_passes_a_reachable_database_that_fits(aws: None) -> None:
    found = _database("LEAST({DBInstanceClassMemory/9531392},5000)")
    settings = _settings_for(found)
    checks = list(existing_database_checks(settings, compute_budget(settings), aws_client))
    assert [c.name for c in checks] == [
        "database vpc",
        "database security group",
        "database route",
        "database max_connections",
    ]
    assert all(c.status == Status.PASS for c in checks), checks
    assert "1802 >= the budget's 200" in checks[-1].found


def test_preflight_refuses_a_budget_the_database_cannot_give(aws: None) -> None:
    found = _database("150")
    settings = _settings_for(found, max_connections=200)
    checks = list(existing_database_checks(settings, compute_budget(settings), aws_client))
    last = checks[-1]
    assert last.status == Status.FAIL
    assert "counts on 200 connections but the database gives 150" in last.found
    assert "database.max_connections" in last.change


def test_preflight_refuses_a_full_security_group(aws: None) -> None:
    # Amazon VPC quotas: 60 inbound rules per security group by default.
    found = _database("200", sg_rules=59)
    settings = _settings_for(found)
    checks = {
        c.name: c for c in existing_database_checks(settings, compute_budget(settings), aws_client)
    }
    assert checks["database security group"].status == Status.FAIL
    assert "59 inbound rules, the stack adds 2 (quota 60" in checks["database security group"].found


def test_verify_compares_the_parameter_group_and_the_live_value(aws: None) -> None:
    _database("180")
    settings = _settings_for(
        {
            "vpc": "vpc-00000000",
            "sg": "sg-00000000",
            "subnet0": "subnet-00000000",
            "subnet1": "subnet-00000001",
        },
        max_connections=170,
    )
    budget = compute_budget(settings)
    outputs = {"database_instance_identifiers": {"writer": "orders"}}
    rds = aws_client("rds")
    healthy = {"body": {"connections": {"max": 180}}}
    checks = list(database_checks(budget, outputs, rds, lambda: healthy))
    by_name = {c.name: c for c in checks}
    assert by_name["max_connections"].status == Status.PASS
    assert by_name["live max_connections"].status == Status.PASS
    low = {"body": {"connections": {"max": 100}}}
    checks = list(database_checks(budget, outputs, rds, lambda: low))
    live = next(c for c in checks if c.name == "live max_connections")
    assert live.status == Status.FAIL
    assert "runs with max_connections 100" in live.found


def test_refusal_arithmetic() -> None:
    from infra.existing_lookup import LiveMaxConnections

    assert refusal(100, LiveMaxConnections(120, "x")) is None
    assert refusal(100, LiveMaxConnections(None, "no group sets it")) is not None
    message = refusal(100, LiveMaxConnections(80, "orders: parameter group p = 80"))
    assert message is not None
    assert "budget counts on 100" in message
    assert "gives 80" in message


def test_preview_refuses_a_database_that_gives_fewer_connections(aws: None) -> None:
    # infra/__main__.py calls this at preview for kind `existing` (RDS API, not a provider
    # invoke: the provider has no data source for parameter values).
    from infra.database_existing import verify_max_connections

    found = _database("150")
    settings = _settings_for(found, max_connections=200)
    with pytest.raises(SettingsError) as caught:
        verify_max_connections(settings, compute_budget(settings))
    assert "the budget counts on 200 connections but the database gives 150" in str(caught.value)
    fits = _settings_for(found, max_connections=150)
    verify_max_connections(fits, compute_budget(fits))  # no error
