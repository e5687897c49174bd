"""Every rule against the real program run under mocks: the shipped stacks pass, and each way of
breaking a stack (a changed setting, or a registered resource edited the way a fork could) is
reported by exactly the rule that guards against it, naming the resource."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.offline import ResourceRecord, Secret, run_offline
from infra.settings import load_stack, settings_from_pulumi_config
from policy.offline import evaluate, to_policy_resources
from policy.report import PolicyReport
from policy.rules import RULES

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "prod")

Edit = Callable[[list[ResourceRecord]], None]


@cache
def _records(stack: str) -> tuple[ResourceRecord, ...]:
    return tuple(run_offline(load_stack(stack, ROOT)).resources)


def records(stack: str) -> list[ResourceRecord]:
    """A private copy of the stack's records, free to edit."""
    return [
        dataclasses.replace(
            r,
            inputs=copy.deepcopy(r.inputs),
            property_dependencies=dict(r.property_dependencies),
        )
        for r in _records(stack)
    ]


def check(
    stack: str, edit: Edit | None = None, config: dict[str, Any] | None = None
) -> PolicyReport:
    recs = records(stack)
    if edit is not None:
        edit(recs)
    return evaluate(to_policy_resources(recs), stack, config)


def check_settings(stack: str, change: Callable[[dict[str, Any]], None]) -> PolicyReport:
    """Change the stack file's settings, run the program offline, apply every rule."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    change(document["config"])
    settings = settings_from_pulumi_config(document["config"], stack=stack)
    return evaluate(to_policy_resources(run_offline(settings).resources), stack)


def find(recs: list[ResourceRecord], type_: str, suffix: str) -> ResourceRecord:
    found = [r for r in recs if r.type == type_ and r.name.endswith(suffix)]
    assert len(found) == 1, [r.name for r in recs if r.type == type_]
    return found[0]


def replace(recs: list[ResourceRecord], old: ResourceRecord, **changes: Any) -> ResourceRecord:
    new = dataclasses.replace(old, **changes)
    recs[recs.index(old)] = new
    return new


def only(report: PolicyReport, policy: str, resource: str) -> None:
    """The report holds violations of `policy` alone, each about the resource named `resource`."""
    assert report.violations, f"{policy} reported nothing"
    assert {v.policy for v in report.violations} == {policy}, [
        (v.policy, v.message) for v in report.violations
    ]
    for v in report.violations:
        assert v.urn is not None
        assert v.urn.endswith(f"::{resource}"), (v.urn, v.message)
        assert resource in v.message
        assert v.enforcement_level == "mandatory"
    assert report.exit_code == 2


FUNCTION = "aws:lambda/function:Function"
INSTANCE = "aws:rds/instance:Instance"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"


def env(record: ResourceRecord) -> dict[str, Any]:
    """The function's variables, editable in place (inside a secret when the program made one)."""
    raw = record.inputs["environment"]
    variables: dict[str, Any] = (raw.value if isinstance(raw, Secret) else raw)["variables"]
    return variables


def container(record: ResourceRecord) -> dict[str, Any]:
    raw = record.inputs["containerDefinitions"]
    data: list[dict[str, Any]] = json.loads(raw.value if isinstance(raw, Secret) else raw)
    return data[0]


def set_container(recs: list[ResourceRecord], task: ResourceRecord, data: dict[str, Any]) -> None:
    replace(recs, task, inputs={**task.inputs, "containerDefinitions": json.dumps([data])})


# -- the shipped stacks --------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_passes_every_rule(stack):
    report = check(stack)
    assert report.violations == []
    assert report.policies == [r.name for r in RULES]
    assert report.resources > 50
    assert report.exit_code == 0


def test_existing_vpc_without_endpoints_passes():
    # HTTPS egress to 0.0.0.0/0 through the VPC's NAT is egress, not ingress: allowed.
    def change(config):
        config["slotguard:network"] = {
            "mode": "existing",
            "vpc_id": "vpc-0123456789abcdef0",
            "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "vpc_endpoints": False,
        }

    assert check_settings("dev", change).violations == []


# -- functions connect through the pooler --------------------------------------------------------


def test_function_wired_to_the_database_endpoint():
    def edit(recs):
        db = find(recs, INSTANCE, "-instance")
        boot = find(recs, FUNCTION, "-bootstrap-function")
        api = find(recs, FUNCTION, "-api-function")
        variables = env(api)
        variables["DB_HOST"] = env(boot)["DB_HOST"]  # the instance's address, as the engine has it
        deps = api.property_dependencies
        replace(
            recs,
            api,
            property_dependencies={**deps, "environment": (*deps["environment"], db.urn)},
            dependencies=(*api.dependencies, db.urn),
        )

    only(check("dev", edit), "functions-through-pooler", "slotguard-dev-api-function")


def test_function_with_the_endpoint_in_a_value_only():
    # Without property dependencies (a value pasted in), the endpoint in a value still counts.
    def edit(recs):
        db = find(recs, INSTANCE, "-instance")
        replace(recs, db, inputs={**db.inputs, "address": "db.internal.example"})
        api = find(recs, FUNCTION, "-api-function")
        env(api)["DB_HOST"] = "db.internal.example"

    report = check("prod", edit)
    only(report, "functions-through-pooler", "slotguard-prod-api-function")
    assert "DB_HOST" in report.violations[0].message


# -- security groups -----------------------------------------------------------------------------


def test_ingress_from_the_functions_to_the_database():
    def edit(recs):
        rule = find(recs, INGRESS, "-in-bootstrap-db")
        functions_sg = find(recs, SG, "-sg-functions")
        deps = dict(rule.property_dependencies)
        deps["referencedSecurityGroupId"] = (functions_sg.urn,)
        recs.append(
            dataclasses.replace(
                rule,
                name="slotguard-dev-in-functions-db",
                urn=rule.urn.replace("-in-bootstrap-db", "-in-functions-db"),
                property_dependencies=deps,
            )
        )

    only(check("dev", edit), "no-direct-network-path", "slotguard-dev-in-functions-db")


def test_ingress_open_to_the_world():
    def edit(recs):
        rule = find(recs, INGRESS, "-in-functions-pooler")
        inputs = {k: v for k, v in rule.inputs.items() if k != "referencedSecurityGroupId"}
        deps = {
            k: v for k, v in rule.property_dependencies.items() if k != "referencedSecurityGroupId"
        }
        replace(recs, rule, inputs={**inputs, "cidrIpv4": "0.0.0.0/0"}, property_dependencies=deps)

    report = check("prod", edit)
    only(report, "no-direct-network-path", "slotguard-prod-in-functions-pooler")
    assert "0.0.0.0/0" in report.violations[0].message


def test_functions_sharing_the_database_group():
    def edit(recs):
        api = find(recs, FUNCTION, "-api-function")
        db_sg = find(recs, SG, "-sg-db")
        deps = dict(api.property_dependencies)
        deps["vpcConfig"] = (*deps["vpcConfig"], db_sg.urn)
        replace(recs, api, property_dependencies=deps)

    only(check("dev", edit), "no-direct-network-path", "slotguard-dev-sg-db")


# -- database private, encrypted, TLS; pooler TLS ------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "prop", "value"),
    [("dev", "publiclyAccessible", True), ("prod", "storageEncrypted", False)],
)
def test_database_public_or_unencrypted(stack, prop, value):
    def edit(recs):
        db = find(recs, INSTANCE, "-instance")
        replace(recs, db, inputs={**db.inputs, prop: value})

    only(check(stack, edit), "database-private-tls", f"slotguard-{stack}-instance")


def test_database_without_forced_tls():
    def edit(recs):
        group = find(recs, "aws:rds/parameterGroup:ParameterGroup", "-params-postgres16")
        params = [p for p in group.inputs["parameters"] if p["name"] != "rds.force_ssl"]
        replace(recs, group, inputs={**group.inputs, "parameters": params})

    report = check("dev", edit)
    only(report, "database-private-tls", "slotguard-dev-params-postgres16")
    assert "rds.force_ssl" in report.violations[0].message


def test_proxy_without_tls():
    def edit(recs):
        proxy = find(recs, "aws:rds/proxy:Proxy", "-proxy")
        replace(recs, proxy, inputs={**proxy.inputs, "requireTls": False})

    only(check("prod", edit), "database-private-tls", "slotguard-prod-proxy")


def test_pgbouncer_without_client_tls():
    def edit(recs):
        task = find(recs, TASK, "-task")
        data = container(task)
        data["secrets"] = [s for s in data["secrets"] if "CLIENT_TLS" not in s["name"]]
        set_container(recs, task, data)

    only(check("dev", edit), "database-private-tls", "slotguard-dev-task")


# -- the connection budget -----------------------------------------------------------------------


def test_more_pgbouncer_tasks_than_the_database_can_serve():
    def edit(recs):
        service = find(recs, SERVICE, "-service")
        replace(recs, service, inputs={**service.inputs, "desiredCount": 4})

    report = check("dev", edit)
    only(report, "connection-budget", "slotguard-dev-service")
    # 4 desired at the deploy plan's 150 % = 6 tasks x (4 + 1) server connections.
    assert "= 30" in report.violations[0].message
    assert "17 the database can give the pooler" in report.violations[0].message


def test_rolling_deploy_surge_counts():
    # Without deploymentMaximumPercent ECS starts up to 200% of the tasks during a deploy.
    def edit(recs):
        service = find(recs, SERVICE, "-service")
        inputs = {k: v for k, v in service.inputs.items() if k != "deploymentMaximumPercent"}
        replace(recs, service, inputs=inputs)

    report = check("dev", edit)
    only(report, "connection-budget", "slotguard-dev-service")
    assert "deploymentMaximumPercent 200" in report.violations[0].message


SCALING = "aws:appautoscaling/target:Target"


def test_a_scaling_pooler_sized_by_the_budget_passes():
    def change(config):
        config["slotguard:pooler"]["pgbouncer"]["max_tasks"] = 4

    report = check_settings("dev", change)
    assert report.violations == [], [v.message for v in report.violations]


def test_auto_scaling_maximum_counts():
    # Target tracking may raise the desired count to maxCapacity; a deploy then adds its surge.
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["slotguard:pooler"]["pgbouncer"]["max_tasks"] = 4
    settings = settings_from_pulumi_config(document["config"], stack="dev")
    recs = list(run_offline(settings).resources)
    target = find(recs, SCALING, "-scaling-target")
    replace(recs, target, inputs={**target.inputs, "maxCapacity": 12})
    report = evaluate(to_policy_resources(recs), "dev")
    only(report, "connection-budget", "slotguard-dev-service")
    assert "12 at the auto scaling maxCapacity at deploymentMaximumPercent 150" in (
        report.violations[0].message
    )


def test_proxy_taking_every_connection():
    def edit(recs):
        pool = find(recs, "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup", "-pool")
        config = dict(pool.inputs["connectionPoolConfig"], maxConnectionsPercent=100)
        replace(recs, pool, inputs={**pool.inputs, "connectionPoolConfig": config})

    report = check("prod", edit)
    only(report, "connection-budget", "slotguard-prod-pool")
    assert "1802" in report.violations[0].message


def test_client_capacity_below_reserved_concurrency():
    def edit(recs):
        task = find(recs, TASK, "-task")
        data = container(task)
        for item in data["environment"]:
            if item["name"] == "PGBOUNCER_MAX_CLIENT_CONN":
                item["value"] = "100"
        set_container(recs, task, data)

    report = check("dev", edit)
    only(report, "connection-budget", "slotguard-dev-service")
    # The dev example's functions are unreserved: together they may reach the account's whole
    # concurrency (accountConcurrency, Lambda's default quota 1,000).
    assert "unreserved functions up to accountConcurrency 1000 = 1000" in (
        report.violations[0].message
    )


def test_unreserved_functions_count_the_accounts_concurrency():
    # Every function's executions count against the account-level limit unless a reservation
    # deducts its share from that shared pool (AWS What's New, 2017-11-30, "Set concurrency
    # limits on individual AWS Lambda functions"): unreserved functions together may reach the
    # account's concurrency, and one above the pooler's 2 x 5000 x 80 % = 8000 clients is
    # refused.
    assert not check("dev").violations
    report = check("dev", config={"connection-budget": {"accountConcurrency": 9000}})
    only(report, "connection-budget", "slotguard-dev-service")
    assert "= 9000 exceeds the client capacity" in report.violations[0].message


# -- app_user timeouts ---------------------------------------------------------------------------


def test_statement_timeout_above_the_maximum():
    # A fork raises the timeout and the functions' timeouts with it: the budget holds, the
    # policy's ceiling of 30 s does not.
    def change(config):
        config["slotguard:app_user"]["statement_timeout_ms"] = 60_000
        for fn in config["slotguard:functions"].values():
            fn["timeout_s"] = 100
        # A stopping pooler task's safe shutdown must outlast the longest transaction.
        config["slotguard:pooler"]["pgbouncer"]["stop_timeout_s"] = 120

    report = check_settings("dev", change)
    only(report, "app-user-timeouts", "slotguard-dev-bootstrap-run")
    assert "60000 ms" in report.violations[0].message


def test_role_without_idle_in_transaction_timeout():
    def edit(recs):
        # The bootstrap's settings are its function's configuration (BOOTSTRAP_CONFIG).
        fn = find(recs, "aws:lambda/function:Function", "-bootstrap-function")
        variables = dict(fn.inputs["environment"]["variables"])
        event = json.loads(variables["BOOTSTRAP_CONFIG"])
        del event["app_user"]["idle_in_transaction_session_timeout_ms"]
        variables["BOOTSTRAP_CONFIG"] = json.dumps(event)
        environment = {**fn.inputs["environment"], "variables": variables}
        replace(recs, fn, inputs={**fn.inputs, "environment": environment})

    report = check("prod", edit)
    only(report, "app-user-timeouts", "slotguard-prod-bootstrap-run")
    assert "idle_in_transaction_session_timeout unset" in report.violations[0].message


# -- alarms --------------------------------------------------------------------------------------


def test_alarm_without_an_action():
    def edit(recs):
        alarm = find(recs, ALARM, "-api-throttles")
        replace(recs, alarm, inputs={**alarm.inputs, "alarmActions": []})

    only(check("dev", edit), "connection-alarms", "slotguard-dev-api-throttles")


def test_alarm_topic_under_the_aws_managed_key():
    """CloudWatch cannot publish to a topic under alias/aws/sns:
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
    """

    def edit(recs):
        topic = find(recs, "aws:sns/topic:Topic", "-topic")
        replace(recs, topic, inputs={**topic.inputs, "kmsMasterKeyId": "alias/aws/sns"})

    report = check("dev", edit)
    only(report, "connection-alarms", "slotguard-dev-topic")
    assert "cloudwatch.amazonaws.com" in report.violations[0].message


def test_warning_alarm_above_the_configured_percentage():
    # 75 % of 25 rounds up to 19 connections, above the policy's 70 % (18). A larger admin
    # margin keeps the bypass alarm (planned peak 15 + admin 5 = 20) above 18 too.
    def change(config):
        config["slotguard:alarms"]["warn_percent"] = 75
        config["slotguard:database"]["admin_margin"] = 5

    report = check_settings("dev", change)
    only(report, "connection-alarms", "slotguard-dev-db-connections-warn")
    assert "70% of max_connections 25 = 18" in report.violations[0].message


# -- functions: reserved concurrency and timeouts ----------------------------------------------


def test_function_reserved_at_zero():
    def edit(recs):
        api = find(recs, FUNCTION, "-api-function")
        replace(recs, api, inputs={**api.inputs, "reservedConcurrentExecutions": 0})

    only(check("prod", edit), "function-limits", "slotguard-prod-api-function")


def test_prod_function_left_unreserved_is_held_against_the_pooler():
    # prod runs RDS Proxy (no client capacity figure): an unreserved function is bounded by the
    # account, so no finding; function-limits no longer requires a reservation.
    def edit(recs):
        api = find(recs, FUNCTION, "-api-function")
        inputs = {k: v for k, v in api.inputs.items() if k != "reservedConcurrentExecutions"}
        replace(recs, api, inputs=inputs)

    assert not check("prod", edit).violations


def test_function_timeout_inside_the_waits():
    def edit(recs):
        health = find(recs, FUNCTION, "-health-function")
        replace(recs, health, inputs={**health.inputs, "timeout": 9})

    report = check("dev", edit)
    only(report, "function-limits", "slotguard-dev-health-function")
    assert "statement_timeout 5 s + the pooler's queue wait 5 s" in report.violations[0].message


# -- plaintext secrets ---------------------------------------------------------------------------


def test_password_in_a_task_definition():
    def edit(recs):
        task = find(recs, TASK, "-task")
        data = container(task)
        data["secrets"] = [s for s in data["secrets"] if s["name"] != "PGBOUNCER_STATS_PASSWORD"]
        data["environment"].append({"name": "PGBOUNCER_STATS_PASSWORD", "value": "hunter2hunter2"})
        set_container(recs, task, data)

    report = check("dev", edit)
    only(report, "no-plaintext-secrets", "slotguard-dev-task")
    assert "PGBOUNCER_STATS_PASSWORD" in report.violations[0].message


@pytest.mark.parametrize(
    ("name", "value"),
    [("DB_PASSWORD", "s3cret-value"), ("DATABASE_URL", "postgresql://app_user:pw@db:5432/app")],
)
def test_credentials_in_a_function_environment(name, value):
    def edit(recs):
        env(find(recs, FUNCTION, "-health-function"))[name] = value

    report = check("prod", edit)
    only(report, "no-plaintext-secrets", "slotguard-prod-health-function")
    assert name in report.violations[0].message


# -- idle client reaping and pool mode -----------------------------------------------------------


def test_proxy_idle_client_timeout_too_long():
    def change(config):
        config["slotguard:pooler"]["rds_proxy"]["idle_client_timeout_s"] = 340

    only(check_settings("prod", change), "idle-client-reaping", "slotguard-prod-proxy")


def test_pgbouncer_client_idle_timeout_too_long():
    def change(config):
        config["slotguard:pooler"]["pgbouncer"]["client_idle_timeout_s"] = 330

    report = check_settings("dev", change)
    only(report, "idle-client-reaping", "slotguard-dev-task")
    assert "330 s" in report.violations[0].message


def test_pgbouncer_session_pooling():
    def edit(recs):
        task = find(recs, TASK, "-task")
        data = container(task)
        data["environment"].append({"name": "PGBOUNCER_POOL_MODE", "value": "session"})
        set_container(recs, task, data)

    report = check("dev", edit)
    only(report, "idle-client-reaping", "slotguard-dev-task")
    assert "session mode" in report.violations[0].message


# -- production safety ---------------------------------------------------------------------------


def test_prod_without_deletion_protection():
    def edit(recs):
        db = find(recs, INSTANCE, "-instance")
        replace(recs, db, inputs={**db.inputs, "deletionProtection": False})

    only(check("prod", edit), "production-safety", "slotguard-prod-instance")


def test_prod_with_short_backups():
    def change(config):
        config["slotguard:database"]["backup_retention_days"] = 1

    report = check_settings("prod", change)
    only(report, "production-safety", "slotguard-prod-instance")
    assert "1 days of backups" in report.violations[0].message


def test_dev_is_not_held_to_production_rules():
    # dev has neither deletion protection nor long backups, and is not production.
    assert check("dev").violations == []
    report = check("dev", config={"production-safety": {"prodStackPattern": "^dev"}})
    assert {v.policy for v in report.violations} == {"production-safety"}
