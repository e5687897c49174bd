"""`slotguard verify`: each check's pass and its failure, with the message the user sees.

RDS instances and parameter groups, ECS, ELB target health, CloudWatch alarms and metrics and SNS
run against moto; Lambda invocations (moto would need Docker), states moto never reaches
(pending-reboot, unconfirmed e-mail, running tasks, unhealthy targets) and RDS Proxy targets are
Stubber responses shaped as the API reference documents them (tests/aws_stubs.py cites each page).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from infra.budget import compute_budget
from infra.settings import StackSettings, load_stack, settings_from_mapping
from slotguard.aws.checks import Check, Status, run_checks
from slotguard.aws.outputs import OutputsError, read_outputs
from slotguard.aws.verify import Verify, storm_burst
from slotguard.cli import app
from slotguard.commands.common import project_root
from tests.aws_stubs import (
    REGION,
    aws_client,
    db_instance,
    ecs_service,
    invoke_response,
    pending_subscription,
    proxy_targets,
    stubbed,
    target_health,
)

ENDPOINT = "slotguard-t-nlb-0123.elb.eu-west-1.amazonaws.com"


def settings(raw: dict[str, Any] | None = None) -> StackSettings:
    return settings_from_mapping(raw or {}, stack="t", region=REGION)


def outputs(**extra: Any) -> dict[str, Any]:
    return {
        "pooler_kind": "pgbouncer",
        "pooler_endpoint": ENDPOINT,
        "pooler_port": 6432,
        "function_names": {"api": "slotguard-t-api", "health": "slotguard-t-health"},
        "database_identifier": "slotguard-t-db",
        "alarm_names": [],
        "alarm_topic_arn": f"arn:aws:sns:{REGION}:123456789012:slotguard-t-alarms",
        "max_connections": 112,
        "pooler_ceiling": 104,
        **extra,
    }


def verify(
    s: StackSettings, clients: dict[str, Any] | None = None, out: dict[str, Any] | None = None, **kw
) -> Verify:
    made = dict(clients or {})

    def client(name: str) -> Any:
        if name not in made:
            made[name] = aws_client(name)
        return made[name]

    return Verify(
        settings=s,
        budget=compute_budget(s),
        outputs=out if out is not None else outputs(),
        client=client,
        region=REGION,
        **kw,
    )


def one(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, [c.name for c in checks]
    return found[0]


# -- the health function -----------------------------------------------------------------------


def health_body(s: StackSettings, **changes: Any) -> dict[str, Any]:
    """What functions/health.py answers (tests/test_functions_api.py runs it for real)."""
    au = compute_budget(s).app_user
    body: dict[str, Any] = {
        "status": "ok",
        "connections": {
            "total": 12,
            "active": 1,
            "idle": 11,
            "idle_in_transaction": 0,
            "max": 112,
            "percent": 10.7,
        },
        "alarm_percent": 80.0,
        "via": {"host": ENDPOINT, "port": 6432},
        "path": {"function": "10.40.1.23:51234", "server_saw": "10.40.2.7:40112"},
        "role": {
            "name": au.name,
            "connection_limit": au.connection_limit,
            "settings": {
                "statement_timeout": str(au.statement_timeout_ms),
                "idle_in_transaction_session_timeout": str(
                    au.idle_in_transaction_session_timeout_ms
                ),
                "lock_timeout": str(au.lock_timeout_ms),
                "search_path": "app",
            },
        },
    }
    body.update(changes)
    return body


def health_lambda(status: int, body: dict[str, Any], function_error: str | None = None) -> Any:
    client, stub = stubbed("lambda")
    payload = {"statusCode": status, "headers": {}, "body": json.dumps(body)}
    if function_error:
        payload = {"errorMessage": "boom", "errorType": "ConfigurationError"}
    stub.add_response(
        "invoke",
        invoke_response(payload, function_error=function_error),
        {
            "FunctionName": "slotguard-t-health",
            "InvocationType": "RequestResponse",
            "Payload": b"{}",
        },
    )
    stub.activate()
    return client


def test_health_200_through_the_pooler_passes() -> None:
    s = settings()
    checks = list(verify(s, {"lambda": health_lambda(200, health_body(s))}).health())
    assert one(checks, "health function").status is Status.PASS
    assert "12 of 112 database connections" in one(checks, "health function").found
    assert one(checks, "through the pooler").status is Status.PASS


def test_health_503_fails_with_its_body() -> None:
    s = settings()
    body = health_body(s, status="saturated", reason="85.0% of max_connections in use")
    check = one(list(verify(s, {"lambda": health_lambda(503, body)}).health()), "health function")
    assert check.failed
    assert "503" in check.found
    assert "85.0% of max_connections" in check.found


def test_health_connected_to_the_database_not_the_pooler_fails() -> None:
    s = settings()
    body = health_body(s, via={"host": "slotguard-t-db.abc.rds.amazonaws.com", "port": 5432})
    check = one(
        list(verify(s, {"lambda": health_lambda(200, body)}).health()), "through the pooler"
    )
    assert check.failed
    assert "the pooler is" in check.found


def test_a_function_the_database_sees_directly_is_not_through_the_pooler() -> None:
    # The health function reports the server's view of its client (inet_client_addr/port)
    # and its own socket; equal means the connection reached the database directly
    # (tests/test_functions_api.py shows both against real PgBouncer and PostgreSQL).
    s = settings()
    body = health_body(s, path={"function": "10.40.1.23:51234", "server_saw": "10.40.1.23:51234"})
    check = one(
        list(verify(s, {"lambda": health_lambda(200, body)}).health()), "through the pooler"
    )
    assert check.failed
    assert "nothing sits in between" in check.found
    body = health_body(s, path={})
    check = one(
        list(verify(s, {"lambda": health_lambda(200, body)}).health()), "through the pooler"
    )
    assert check.failed
    assert "reports no path" in check.found


def pooler_tasks(*addresses: str) -> Any:
    ecs, stub = stubbed("ecs")
    arns = [f"arn:aws:ecs:{REGION}:123456789012:task/slotguard-t/t{i}" for i in range(2)]
    stub.add_response(
        "list_tasks",
        {"taskArns": arns},
        {
            "cluster": "slotguard-t",
            "serviceName": "slotguard-t-pgbouncer",
            "desiredStatus": "RUNNING",
        },
    )
    # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Attachment.html
    stub.add_response(
        "describe_tasks",
        {
            "tasks": [
                {
                    "taskArn": arn,
                    "attachments": [
                        {
                            "type": "ElasticNetworkInterface",
                            "details": [{"name": "privateIPv4Address", "value": address}],
                        }
                    ],
                }
                for arn, address in zip(arns, addresses, strict=True)
            ]
        },
        {"cluster": "slotguard-t", "tasks": arns},
    )
    stub.activate()
    return ecs


def test_the_client_the_database_saw_is_one_of_the_pooler_tasks() -> None:
    s = settings()
    out = outputs(**PGB)
    clients = {
        "lambda": health_lambda(200, health_body(s)),
        "ecs": pooler_tasks("10.40.2.7", "10.40.3.9"),
    }
    check = one(list(verify(s, clients, out).health()), "through the pooler")
    assert check.status is Status.PASS, check
    assert "pooler task 10.40.2.7" in check.found
    clients = {
        "lambda": health_lambda(200, health_body(s)),
        "ecs": pooler_tasks("10.40.2.8", "10.40.3.9"),
    }
    check = one(list(verify(s, clients, out).health()), "through the pooler")
    assert check.failed
    assert "none of the pooler's tasks (10.40.2.8, 10.40.3.9)" in check.found


def test_a_health_function_that_raises_is_a_failed_row() -> None:
    s = settings()
    v = verify(s, {"lambda": health_lambda(200, {}, function_error="Unhandled")})
    check = one(run_checks([("health function", v.health)]), "health function")
    assert check.failed
    assert "raised" in check.found
    assert "/aws/lambda/slotguard-t-health" in check.change


def test_app_user_settings_as_the_budget_gives_them_pass() -> None:
    s = settings()
    check = one(
        list(verify(s, {"lambda": health_lambda(200, health_body(s))}).app_user()), "app_user role"
    )
    assert check.status is Status.PASS


def test_app_user_settings_that_differ_fail_naming_each() -> None:
    s = settings()
    body = health_body(s)
    body["role"]["settings"]["statement_timeout"] = "30000"
    body["role"]["connection_limit"] = -1
    check = one(list(verify(s, {"lambda": health_lambda(200, body)}).app_user()), "app_user role")
    assert check.failed
    assert "statement_timeout 30000 (budget: 5000)" in check.found
    assert "connection_limit -1" in check.found
    assert "bootstrap" in check.change


def test_a_limit_the_bootstrap_holds_for_a_pending_reboot_passes_and_says_why() -> None:
    # max_connections is static: a raise waits for a reboot, and until then the bootstrap holds
    # app_user's limit within the running server's (functions/bootstrap.py
    # running_connection_limit) and reports it (output app_user_connection_limit).
    s = settings()
    body = health_body(s)
    budget_limit = compute_budget(s).app_user.connection_limit
    body["role"]["connection_limit"] = budget_limit - 20
    out = outputs(
        app_user_connection_limit=budget_limit - 20, bootstrap_function="slotguard-t-bootstrap"
    )
    check = one(
        list(verify(s, {"lambda": health_lambda(200, body)}, out).app_user()), "app_user role"
    )
    assert check.status is Status.PASS, check
    assert "as the bootstrap set it" in check.found
    assert "pending reboot" in check.found
    assert "slotguard-t-bootstrap" in check.found
    # A limit that is neither the budget's nor the bootstrap's was changed by someone else.
    body["role"]["connection_limit"] = budget_limit - 21
    check = one(
        list(verify(s, {"lambda": health_lambda(200, body)}, out).app_user()), "app_user role"
    )
    assert check.failed
    assert f"the bootstrap reported CONNECTION LIMIT {budget_limit - 20}" in check.found


# -- the parameter group -----------------------------------------------------------------------


def database(max_connections: str) -> None:
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_parameter_group(
        DBParameterGroupName="slotguard-t-params",
        DBParameterGroupFamily="postgres16",
        Description="slotguard t",
    )
    rds.modify_db_parameter_group(
        DBParameterGroupName="slotguard-t-params",
        Parameters=[
            {
                "ParameterName": "max_connections",
                "ParameterValue": max_connections,
                "ApplyMethod": "pending-reboot",
            }
        ],
    )
    rds.create_db_instance(
        DBInstanceIdentifier="slotguard-t-db",
        DBInstanceClass="db.t4g.micro",
        Engine="postgres",
        EngineVersion="16.4",
        DBParameterGroupName="slotguard-t-params",
        MasterUsername="slotguard",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
    )


def test_parameter_group_in_sync_with_the_budgets_max_connections_passes(aws: None) -> None:
    s = settings()
    database(str(compute_budget(s).max_connections))
    checks = list(verify(s).parameter_group())
    assert one(checks, "parameter group in sync").status is Status.PASS
    assert one(checks, "max_connections").found == "112 (the budget's)"


def test_max_connections_other_than_the_budgets_fails(aws: None) -> None:
    database("200")
    check = one(list(verify(settings()).parameter_group()), "max_connections")
    assert check.failed
    assert "parameter group says 200, the budget 112" in check.found


def test_a_parameter_group_pending_reboot_fails_with_the_reboot_command() -> None:
    rds, stub = stubbed("rds")
    stub.add_response(
        "describe_db_instances",
        db_instance("slotguard-t-db", "slotguard-t-params", "pending-reboot"),
        {"DBInstanceIdentifier": "slotguard-t-db"},
    )
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBParameters.html
    stub.add_response(
        "describe_db_parameters",
        {"Parameters": [{"ParameterName": "max_connections", "ParameterValue": "112"}]},
        {"DBParameterGroupName": "slotguard-t-params", "Source": "user"},
    )
    stub.activate()
    checks = list(verify(settings(), {"rds": rds}).parameter_group())
    check = one(checks, "parameter group in sync")
    assert check.failed
    assert "pending-reboot" in check.found
    assert "aws rds reboot-db-instance --db-instance-identifier slotguard-t-db" in check.change
    assert one(checks, "max_connections").status is Status.PASS


# -- the pooler --------------------------------------------------------------------------------

PGB = {"ecs_cluster_name": "slotguard-t", "ecs_service_name": "slotguard-t-pgbouncer"}


def test_ecs_tasks_not_running_fail(aws: None) -> None:
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="slotguard-t")
    ecs.register_task_definition(
        family="pgbouncer",
        containerDefinitions=[{"name": "pgbouncer", "image": "x", "memory": 512}],
    )
    ecs.create_service(
        cluster="slotguard-t",
        serviceName="slotguard-t-pgbouncer",
        taskDefinition="pgbouncer",
        desiredCount=2,
    )
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    elb = boto3.client("elbv2", region_name=REGION)
    tg = elb.create_target_group(
        Name="slotguard-t-tg", Protocol="TCP", Port=6432, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.0.0.5"}, {"Id": "10.0.1.5"}])
    checks = list(verify(settings(), out=outputs(**PGB, target_group_arn=tg)).pooler())
    tasks = one(checks, "pgbouncer tasks")
    assert tasks.failed  # moto starts no task: 0 running of 2, its first rollout under way
    assert "0 running of 2 desired" in tasks.found
    # Deployment.rolloutState IN_PROGRESS while a deployment rolls out
    # (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html).
    assert "rolloutState IN_PROGRESS" in tasks.found
    assert "wait for it" in tasks.change
    # Targets are held against the tasks running, not against the budget's count.
    targets = one(checks, "nlb targets")
    assert targets.failed
    assert "0 tasks running" in targets.found


def pooler_stubs(
    running: int,
    states: tuple[str, ...],
    desired: int = 2,
    health: str = "HEALTHY",
    rollout: str = "COMPLETED",
) -> dict[str, Any]:
    ecs, ecs_stub = stubbed("ecs")
    service = ecs_service("slotguard-t", "slotguard-t-pgbouncer", running, desired)
    # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html
    service["services"][0]["deployments"] = [
        {"id": "ecs-svc/1", "status": "PRIMARY", "rolloutState": rollout}
    ]
    ecs_stub.add_response(
        "describe_services",
        service,
        {"cluster": "slotguard-t", "services": ["slotguard-t-pgbouncer"]},
    )
    if rollout == "COMPLETED" and running == desired:
        arns = [f"arn:aws:ecs:{REGION}:123456789012:task/slotguard-t/t{i}" for i in range(running)]
        # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html
        ecs_stub.add_response(
            "list_tasks",
            {"taskArns": arns},
            {
                "cluster": "slotguard-t",
                "serviceName": "slotguard-t-pgbouncer",
                "desiredStatus": "RUNNING",
            },
        )
        if arns:
            # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html
            # (healthStatus HEALTHY | UNHEALTHY | UNKNOWN)
            ecs_stub.add_response(
                "describe_tasks",
                {
                    "tasks": [
                        {
                            "taskArn": arn,
                            "healthStatus": health,
                            "containers": [{"name": "pgbouncer", "healthStatus": health}],
                        }
                        for arn in arns
                    ]
                },
                {"cluster": "slotguard-t", "tasks": arns},
            )
    ecs_stub.activate()
    elb, elb_stub = stubbed("elbv2")
    elb_stub.add_response(
        "describe_target_health", target_health(*states), {"TargetGroupArn": "tg"}
    )
    elb_stub.activate()
    return {"ecs": ecs, "elbv2": elb}


def test_running_tasks_and_healthy_targets_pass() -> None:
    v = verify(
        settings(), pooler_stubs(2, ("healthy", "healthy")), outputs(**PGB, target_group_arn="tg")
    )
    checks = [c for c in v.pooler() if c.name != "pooler certificate"]
    assert [c.status for c in checks] == [Status.PASS, Status.PASS]


def test_a_scaled_out_service_running_its_desired_count_passes() -> None:
    # Target tracking sets desiredCount between tasks and max_tasks: 3 of 3 desired is healthy.
    s = settings({"pooler": {"kind": "pgbouncer", "pgbouncer": {"tasks": 2, "max_tasks": 3}}})
    v = verify(
        s,
        pooler_stubs(3, ("healthy",) * 3, desired=3),
        outputs(**PGB, target_group_arn="tg"),
    )
    checks = [c for c in v.pooler() if c.name != "pooler certificate"]
    assert [c.status for c in checks] == [Status.PASS, Status.PASS], checks
    assert "the stack runs 2 to 3" in one(checks, "pgbouncer tasks").found


def test_an_unhealthy_container_or_a_failed_rollout_fails() -> None:
    v = verify(
        settings(),
        pooler_stubs(2, ("healthy", "healthy"), health="UNHEALTHY"),
        outputs(**PGB, target_group_arn="tg"),
    )
    check = one(list(v.pooler()), "pgbouncer tasks")
    assert check.failed
    assert "pgbouncer UNHEALTHY" in check.found
    v = verify(
        settings(),
        pooler_stubs(2, ("healthy", "healthy"), rollout="FAILED"),
        outputs(**PGB, target_group_arn="tg"),
    )
    check = one(list(v.pooler()), "pgbouncer tasks")
    assert check.failed
    assert "rolloutState FAILED" in check.found


def test_the_log_group_hint_names_the_generated_suffix(aws: None) -> None:
    # The log group is created with name_prefix, so its name ends in a generated suffix; the
    # task definition's awslogs-group option carries the real name.
    ecs = boto3.client("ecs", region_name=REGION)
    group = "/ecs/slotguard-t-pgbouncer-20260101a1b2c3d4e5f6a7b8c9d0"
    definition = ecs.register_task_definition(
        family="pgbouncer",
        containerDefinitions=[
            {
                "name": "pgbouncer",
                "image": "x",
                "memory": 512,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": group, "awslogs-region": REGION},
                },
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    v = verify(settings(), {"ecs": ecs})
    assert v._log_group({"taskDefinition": definition}) == group
    assert v._log_group(None) == "/ecs/slotguard-t-pgbouncer-*"


def test_unhealthy_targets_fail() -> None:
    v = verify(
        settings(), pooler_stubs(2, ("healthy", "unhealthy")), outputs(**PGB, target_group_arn="tg")
    )
    check = one(list(v.pooler()), "nlb targets")
    assert check.failed
    assert "1 healthy of 2 targets" in check.found


@pytest.mark.parametrize(("state", "ok"), [("AVAILABLE", True), ("UNAVAILABLE", False)])
def test_rds_proxy_targets(state: str, ok: bool) -> None:
    rds, stub = stubbed("rds")
    stub.add_response(
        "describe_db_proxy_targets",
        proxy_targets("slotguard-t-db", state),
        {"DBProxyName": "slotguard-t"},
    )
    stub.activate()
    s = settings({"pooler": "rds-proxy"})
    check = one(
        list(verify(s, {"rds": rds}, outputs(proxy_name="slotguard-t")).pooler()),
        "rds proxy targets",
    )
    assert (check.status is Status.PASS) is ok
    if not ok:
        assert "AUTH_FAILURE" in check.change


# -- alarms and the subscription ---------------------------------------------------------------


def alarm(name: str, actions: bool = True) -> None:
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/RDS",
        MetricName="DatabaseConnections",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": "slotguard-t-db"}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=2,
        Threshold=79,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        AlarmActions=["arn:aws:sns:eu-west-1:123456789012:slotguard-t-alarms"] if actions else [],
    )


def insufficient(name: str) -> None:
    # A new alarm's state until its first periods are evaluated.
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName=name, StateValue="INSUFFICIENT_DATA", StateReason="no datapoints yet"
    )


def test_alarms_with_actions_inside_their_first_minutes_pass(aws: None) -> None:
    alarm("slotguard-t-db-connections-warn")
    insufficient("slotguard-t-db-connections-warn")
    checks = list(
        verify(settings(), out=outputs(alarm_names=["slotguard-t-db-connections-warn"])).alarms()
    )
    check = one(checks, "alarm slotguard-t-db-connections-warn")
    assert check.status is Status.PASS
    assert check.found.startswith("INSUFFICIENT_DATA")  # new, still within the grace period


def test_alarms_missing_without_action_or_stuck_fail(aws: None) -> None:
    alarm("slotguard-t-a")
    insufficient("slotguard-t-a")
    alarm("slotguard-t-b", actions=False)
    names = ["slotguard-t-a", "slotguard-t-b", "slotguard-t-c"]
    later = datetime.now(UTC) + timedelta(minutes=20)
    checks = list(verify(settings(), out=outputs(alarm_names=names), now=lambda: later).alarms())
    stuck = one(checks, "alarm slotguard-t-a")
    assert stuck.failed
    assert "INSUFFICIENT_DATA for 20 min" in stuck.found
    assert "AWS/RDS/DatabaseConnections" in stuck.change
    assert one(checks, "alarm slotguard-t-b").found == "has no alarm action"
    assert one(checks, "alarm slotguard-t-c").found == "does not exist"


def publish_connections() -> None:
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[
            {
                "MetricName": "DatabaseConnections",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "slotguard-t-db"}],
                "Value": 3,
            }
        ],
    )


def test_an_alarm_firing_after_the_deploy_fails(aws: None) -> None:
    alarm("slotguard-t-a")
    publish_connections()
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName="slotguard-t-a", StateValue="ALARM", StateReason="Threshold Crossed"
    )
    check = one(
        list(verify(settings(), out=outputs(alarm_names=["slotguard-t-a"])).alarms()),
        "alarm slotguard-t-a",
    )
    assert check.failed
    assert "ALARM" in check.found
    assert "Threshold Crossed" in check.found


def test_an_alarm_on_a_metric_nobody_publishes_fails(aws: None) -> None:
    # ListMetrics returns only metrics with datapoints in the past two weeks
    # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_ListMetrics.html):
    # an alarm on a wrong dimension sits in OK forever and can never fire.
    alarm("slotguard-t-a")
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName="slotguard-t-a", StateValue="OK", StateReason="evaluated"
    )
    later = datetime.now(UTC) + timedelta(minutes=20)
    v = verify(settings(), out=outputs(alarm_names=["slotguard-t-a"]), now=lambda: later)
    check = one(list(v.alarms()), "alarm slotguard-t-a")
    assert check.failed
    assert "no datapoint of AWS/RDS/DatabaseConnections {DBInstanceIdentifier=slotguard-t-db}" in (
        check.found
    )
    publish_connections()
    check = one(list(v.alarms()), "alarm slotguard-t-a")
    assert check.status is Status.PASS, check


def test_a_function_alarm_is_proven_by_the_functions_invocations(aws: None) -> None:
    # Lambda sends Errors/Throttles only when nonzero ("AWS Lambda only sends these metrics to
    # CloudWatch if they have a nonzero value",
    # http://docs.aws.amazon.com/lambda/latest/dg/monitoring-functions-metrics.html): a healthy
    # function's Throttles alarm is checked against its Invocations instead.
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    dims: Any = [{"Name": "FunctionName", "Value": "slotguard-t-api"}]
    cloudwatch.put_metric_alarm(
        AlarmName="slotguard-t-api-throttles",
        Namespace="AWS/Lambda",
        MetricName="Throttles",
        Dimensions=dims,
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        AlarmActions=["arn:aws:sns:eu-west-1:123456789012:slotguard-t-alarms"],
    )
    cloudwatch.set_alarm_state(
        AlarmName="slotguard-t-api-throttles", StateValue="OK", StateReason="evaluated"
    )
    later = datetime.now(UTC) + timedelta(minutes=20)
    v = verify(
        settings(), out=outputs(alarm_names=["slotguard-t-api-throttles"]), now=lambda: later
    )
    check = one(list(v.alarms()), "alarm slotguard-t-api-throttles")
    assert check.status is Status.PASS
    assert "not proven" in check.found
    cloudwatch.put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[{"MetricName": "Invocations", "Dimensions": dims, "Value": 1}],
    )
    check = one(list(v.alarms()), "alarm slotguard-t-api-throttles")
    assert check.status is Status.PASS
    assert "not proven" not in check.found


def test_alarms_that_left_insufficient_data_pass_later(aws: None) -> None:
    alarm("slotguard-t-a")
    publish_connections()
    boto3.client("cloudwatch", region_name=REGION).set_alarm_state(
        AlarmName="slotguard-t-a", StateValue="OK", StateReason="evaluated"
    )
    later = datetime.now(UTC) + timedelta(minutes=20)
    check = one(
        list(
            verify(
                settings(), out=outputs(alarm_names=["slotguard-t-a"]), now=lambda: later
            ).alarms()
        ),
        "alarm slotguard-t-a",
    )
    assert check.status is Status.PASS


def test_a_confirmed_subscription_passes_and_none_is_skipped(aws: None) -> None:
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="slotguard-t-alarms")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.com")
    s = settings({"alarms": {"email": "ops@example.com"}})
    check = one(
        list(verify(s, out=outputs(alarm_topic_arn=topic)).subscription()), "alarm subscription"
    )
    assert check.status is Status.PASS
    assert [c.status for c in verify(settings()).subscription()] == [Status.SKIP]


def test_an_unconfirmed_subscription_fails_naming_the_address() -> None:
    topic = f"arn:aws:sns:{REGION}:123456789012:slotguard-t-alarms"
    sns, stub = stubbed("sns")
    stub.add_response(
        "list_subscriptions_by_topic",
        pending_subscription(topic, "ops@example.com"),
        {"TopicArn": topic},
    )
    stub.activate()
    s = settings({"alarms": {"email": "ops@example.com"}})
    check = one(list(verify(s, {"sns": sns}).subscription()), "alarm subscription")
    assert check.failed
    assert "ops@example.com" in check.change


# -- the storm ---------------------------------------------------------------------------------


def test_the_burst_is_sized_to_the_stack() -> None:
    budget = compute_budget(settings())
    assert storm_burst(budget, "api") == min(50, 2 * budget.pooler_server_connections)
    small = compute_budget(
        settings(
            {
                "functions": {
                    "api": {"handler": "functions.api.handler", "reserved_concurrency": 7},
                    "health": {"handler": "functions.health.handler", "reserved_concurrency": 2},
                }
            }
        )
    )
    assert storm_burst(small, "api") == 7
    assert storm_burst(small, "health") == 2


@pytest.fixture
def event(tmp_path: Path) -> Path:
    """The burst's event file (the function's own; the example's sample is not needed)."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"order": "o-{index}"}))
    return path


def storm_lambda(burst: int, *, fail: int = 0) -> Any:
    client, stub = stubbed("lambda")
    for index in range(burst):
        status = 503 if index < fail else 201
        body = {"error": "database unavailable"} if status == 503 else {"id": index}
        stub.add_response(
            "invoke",
            invoke_response({"statusCode": status, "headers": {}, "body": json.dumps(body)}),
        )
    stub.activate()
    return client


def connections(peak: float) -> None:
    # RDS's DatabaseConnections, per instance, each minute
    # (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-metrics.html).
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[
            {
                "MetricName": "DatabaseConnections",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "slotguard-t-db"}],
                "Timestamp": datetime.now(UTC),
                "Value": peak,
                "Unit": "Count",
            }
        ],
    )


def test_a_storm_with_no_failure_and_a_peak_within_the_ceiling_passes(
    aws: None, event: Path
) -> None:
    connections(104)
    v = verify(settings(), burst=4, storm_client=lambda size: storm_lambda(4), storm_event=event)
    checks = list(v.storm_check())
    assert one(checks, "storm").found == "burst 4: 0 failed"
    peak = one(checks, "storm peak connections")
    assert peak.status is Status.PASS
    # db.t4g.micro's 112 - 3 superuser - 2 rds_superuser reserved - 3 admin = 104.
    assert "ceiling 104 + admin margin 3 = 107" in peak.found


def test_a_storm_with_failures_or_a_peak_over_the_ceiling_fails(aws: None, event: Path) -> None:
    connections(111)
    v = verify(
        settings(), burst=4, storm_client=lambda size: storm_lambda(4, fail=1), storm_event=event
    )
    checks = list(v.storm_check())
    assert one(checks, "storm").failed
    assert "1 failed" in one(checks, "storm").found
    peak = one(checks, "storm peak connections")
    assert peak.failed
    assert "peak 111" in peak.found


def test_a_storm_whose_metric_has_not_arrived_says_to_rerun(aws: None, event: Path) -> None:
    v = verify(
        settings(),
        burst=2,
        storm_client=lambda size: storm_lambda(2),
        metric_wait_s=0,
        storm_event=event,
    )
    check = one(list(v.storm_check()), "storm peak connections")
    assert check.failed
    assert "again in a few minutes" in check.change


# -- the outputs and the command ---------------------------------------------------------------


def test_outputs_without_the_pulumi_cli_say_so() -> None:
    with pytest.raises(OutputsError, match="Pulumi CLI is not installed"):
        read_outputs("dev", which=lambda _: None)


def test_outputs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text(json.dumps(outputs()))
    assert read_outputs("t", outputs_file=path)["pooler_port"] == 6432
    path.write_text("[1]")
    with pytest.raises(OutputsError, match="expected a JSON object"):
        read_outputs("t", outputs_file=path)


def test_a_missing_output_is_a_failed_row_naming_it() -> None:
    out = outputs()
    del out["database_identifier"]
    v = verify(settings(), out=out, storm=False)
    check = one(run_checks([("parameter group", v.parameter_group)]), "parameter group")
    assert check.failed
    assert "no output `database_identifier`" in check.found


def test_verify_command_without_pulumi_exits_1_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(app, ["verify", "--stack", "dev"])
    assert result.exit_code == 1
    assert "Pulumi CLI is not installed" in result.output
    assert "Traceback" not in result.output


def test_preflight_command_prints_the_table_and_exits_2(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slotguard.commands import preflight as command

    monkeypatch.setenv("PATH", "/nonexistent")  # neither pulumi nor docker here
    result = CliRunner().invoke(app, ["preflight", "--stack", "dev"], env={"COLUMNS": "250"})
    assert result.exit_code == command.EXIT_FAILED
    assert "pulumi cli" in result.output
    assert "not on PATH" in result.output
    assert "Traceback" not in result.output


def test_verify_command_reads_an_outputs_file_and_exits_1_on_a_failed_row(
    aws: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slotguard.commands import preflight as shared

    dev = load_stack("dev", project_root(None))
    health = health_lambda(200, health_body(dev))
    made: dict[str, Any] = {"lambda": health}

    def clients(region: str | None) -> tuple[Any, str]:
        return (lambda name: made.setdefault(name, aws_client(name))), REGION

    monkeypatch.setattr(shared, "session_clients", clients)
    monkeypatch.setattr("slotguard.commands.verify.session_clients", clients)
    out = outputs(function_names={"api": "slotguard-dev-api", "health": "slotguard-t-health"})
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(out))
    result = CliRunner().invoke(
        app,
        ["verify", "--stack", "dev", "--outputs", str(path), "--no-storm"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 1, result.output
    assert "health function" in result.output
    assert "pass" in result.output
    assert "DBInstanceNotFound" in result.output  # the database this moto account lacks
    assert "Traceback" not in result.output


def test_rds_proxy_targets_registered_in_moto_are_available(aws: None) -> None:
    ec2 = aws_client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(("eu-west-1a", "eu-west-1b"))
    ]
    database(str(compute_budget(settings()).max_connections))
    rds = aws_client("rds")
    rds.create_db_proxy(
        DBProxyName="slotguard-t",
        EngineFamily="POSTGRESQL",
        Auth=[{"SecretArn": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:app"}],
        RoleArn="arn:aws:iam::123456789012:role/slotguard-t-proxy",
        VpcSubnetIds=subnets,
    )
    rds.register_db_proxy_targets(
        DBProxyName="slotguard-t", DBInstanceIdentifiers=["slotguard-t-db"]
    )
    s = settings({"pooler": "rds-proxy"})
    check = one(
        list(verify(s, out=outputs(proxy_name="slotguard-t")).pooler()), "rds proxy targets"
    )
    assert check.status is Status.PASS
    assert check.found == "slotguard-t-db AVAILABLE"
