"""AWS's own constraints on every resource the program declares, from botocore's service models.

The enumerations and ranges are read from the API models botocore ships, not typed here; only
Fargate's CPU/memory table (in no API model) and CloudWatch Logs' retention values come from
`infra.aws_constraints`, each written once with its documentation reference.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

from infra.aws_constraints import (
    FARGATE_TASK_SIZES,
    LOG_RETENTION_DAYS,
    cloudwatch_period_valid,
    enum,
    fargate_pair_problem,
    fargate_pair_valid,
    int_range,
)
from infra.functions import UNRESERVED
from infra.offline import (
    KIND_VARIANTS,
    VARIANTS,
    OfflineRun,
    ResourceRecord,
    run_offline,
    variant_settings,
)


@functools.cache
def stack(variant: str) -> OfflineRun:
    return run_offline(variant_settings(variant))


ALL = [*VARIANTS, *KIND_VARIANTS]


@pytest.mark.parametrize("variant", ALL)
def test_lambda_functions_within_lambda_limits(variant: str) -> None:
    runtimes = enum("lambda", "Runtime")
    architectures = enum("lambda", "Architecture")
    memory_low, memory_high = int_range("lambda", "MemorySize")
    timeout_low, timeout_high = int_range("lambda", "Timeout")
    concurrency_low, _ = int_range("lambda", "ReservedConcurrentExecutions")
    functions = stack(variant).of_type("aws:lambda/function:Function")
    assert functions
    for fn in functions:
        assert fn.input("runtime") in runtimes
        assert set(fn.input("architectures")) <= architectures
        assert len(fn.input("architectures")) == 1
        assert memory_high is not None
        assert memory_low <= fn.input("memorySize") <= memory_high
        assert timeout_high is not None
        assert timeout_low <= fn.input("timeout") <= timeout_high
        # -1 leaves the function unreserved (pulumi-aws `lambda_.Function`
        # reserved_concurrent_executions: "A value of `0` disables lambda from being triggered
        # and `-1` removes any concurrency limitations. Defaults to Unreserved Concurrency
        # Limits `-1`"); any reservation is at least 1, never the 0 that disables the function.
        reserved = fn.input("reservedConcurrentExecutions")
        assert reserved == UNRESERVED or reserved >= max(concurrency_low, 1)
        assert fn.input("loggingConfig")["logFormat"] in enum("lambda", "LogFormat")
        assert len(fn.input("name")) <= 64
    for url in stack(variant).of_type("aws:lambda/functionUrl:FunctionUrl"):
        assert url.input("authorizationType") in enum("lambda", "FunctionUrlAuthType")


@pytest.mark.parametrize("variant", ALL)
def test_alarms_within_cloudwatch_limits(variant: str) -> None:
    statistics = enum("cloudwatch", "Statistic")
    comparisons = enum("cloudwatch", "ComparisonOperator")
    low, high = int_range("cloudwatch", "EvaluationPeriods")
    _, max_dimensions = int_range("cloudwatch", "Dimensions")
    assert max_dimensions is not None
    alarms = stack(variant).of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarms
    for alarm in alarms:
        queries = alarm.input("metricQueries") or []
        metrics = [q["metric"] for q in queries if q.get("metric")] or [
            {
                "stat": alarm.input("statistic"),
                "period": alarm.input("period"),
                "dimensions": alarm.input("dimensions"),
            }
        ]
        for metric in metrics:
            assert metric["stat"] in statistics
            assert cloudwatch_period_valid(metric["period"])
            assert len(metric["dimensions"]) <= max_dimensions
        if queries:
            # Exactly one query is the alarm's value; ids are lower-case identifiers.
            assert sum(bool(q.get("returnData")) for q in queries) == 1
            assert all(re.fullmatch(r"[a-z][a-zA-Z0-9_]*", q["id"]) for q in queries)
        assert alarm.input("comparisonOperator") in comparisons
        assert low <= alarm.input("evaluationPeriods") <= (high or alarm.input("evaluationPeriods"))
        assert alarm.input("datapointsToAlarm") <= alarm.input("evaluationPeriods")
        assert alarm.input("alarmActions")


@pytest.mark.parametrize(
    "variant", [v for v in ALL if variant_settings(v).pooler.kind == "pgbouncer"]
)
def test_fargate_task_within_ecs_limits(variant: str) -> None:
    run = stack(variant)
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    assert fargate_pair_valid(int(task.input("cpu")), int(task.input("memory")))
    platform = task.input("runtimePlatform")
    assert platform["cpuArchitecture"] in enum("ecs", "CPUArchitecture")
    assert platform["operatingSystemFamily"] in enum("ecs", "OSFamily")
    assert task.input("networkMode") in enum("ecs", "NetworkMode")
    assert set(task.input("requiresCompatibilities")) <= enum("ecs", "Compatibility")
    (container,) = json.loads(task.input("containerDefinitions"))
    assert {u["name"] for u in container["ulimits"]} <= enum("ecs", "UlimitName")
    assert container["logConfiguration"]["logDriver"] in enum("ecs", "LogDriver")
    service = run.one("aws:ecs/service:Service")
    assert service.input("launchType") in enum("ecs", "LaunchType")
    assert service.input("propagateTags") in enum("ecs", "PropagateTags")
    target_group = run.one("aws:lb/targetGroup:TargetGroup")
    assert target_group.input("protocol") in enum("elbv2", "ProtocolEnum")
    assert target_group.input("targetType") in enum("elbv2", "TargetTypeEnum")
    assert run.one("aws:lb/loadBalancer:LoadBalancer").input("loadBalancerType") in enum(
        "elbv2", "LoadBalancerTypeEnum"
    )


@pytest.mark.parametrize("variant", ALL)
def test_rds_within_rds_limits(variant: str) -> None:
    run = stack(variant)
    major = run.settings.database.engine_major
    kind = run.settings.database.kind
    if kind == "rds-instance":
        instance = run.one("aws:rds/instance:Instance")
        group = run.one("aws:rds/parameterGroup:ParameterGroup")
        # Parameter group families are not enumerated in the RDS model; the family must name
        # the engine and major version of the instance it serves.
        assert group.input("family") == f"{instance.input('engine')}{major}"
        assert re.fullmatch(r"postgres1[3-9]", group.input("family"))
        # A major version only, kept as given while RDS moves the minor (see test_infra_account).
        assert instance.input("engineVersion") == str(major)
    elif kind == "aurora":
        cluster = run.one("aws:rds/cluster:Cluster")
        for group_type in (
            "parameterGroup:ParameterGroup",
            "clusterParameterGroup:ClusterParameterGroup",
        ):
            family = run.one(f"aws:rds/{group_type}").input("family")
            assert family == f"{cluster.input('engine')}{major}"
        scaling = cluster.input("serverlessv2ScalingConfiguration")
        if scaling:
            # ServerlessV2ScalingConfiguration: 0 (auto-pause) to 256 ACUs in half steps.
            assert 0 <= scaling["minCapacity"] <= scaling["maxCapacity"] <= 256
    else:
        assert (
            run.of_type(
                "aws:rds/instance:Instance",
            )
            == []
        )
    for endpoint in run.of_type("aws:rds/proxyEndpoint:ProxyEndpoint"):
        assert endpoint.input("targetRole") in enum("rds", "DBProxyEndpointTargetRole")
    for proxy in run.of_type("aws:rds/proxy:Proxy"):
        assert proxy.input("engineFamily") in enum("rds", "EngineFamily")
        for auth in proxy.input("auths"):
            assert auth["authScheme"] in enum("rds", "AuthScheme")
            assert auth["iamAuth"] in enum("rds", "IAMAuthMode")
            assert auth["clientPasswordAuthType"] in enum("rds", "ClientPasswordAuthType")
    for group_ in run.of_type("aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"):
        pool = group_.input("connectionPoolConfig")
        assert 1 <= pool["maxConnectionsPercent"] <= 100
        assert 0 <= pool["maxIdleConnectionsPercent"] <= pool["maxConnectionsPercent"]
        assert 1 <= pool["connectionBorrowTimeout"] <= 3600


@pytest.mark.parametrize("variant", ALL)
def test_log_groups_use_a_retention_cloudwatch_accepts(variant: str) -> None:
    groups = stack(variant).of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups
    for group in groups:
        assert group.input("retentionInDays") in LOG_RETENTION_DAYS


def test_fargate_table_and_errors() -> None:
    assert fargate_pair_valid(256, 512)
    assert fargate_pair_valid(4096, 30720)
    assert not fargate_pair_valid(256, 4096)
    assert not fargate_pair_valid(8192, 17408)  # 8 vCPU moves in 4 GiB steps
    assert all(m > 0 for sizes in FARGATE_TASK_SIZES.values() for m in sizes)
    assert fargate_pair_problem(256, 512) is None
    problem = fargate_pair_problem(300, 512)
    assert problem is not None
    assert problem.startswith("pooler.pgbouncer.cpu: ")
    problem = fargate_pair_problem(1024, 512)
    assert problem is not None
    assert "allowed: 2048..8192" in problem


def test_enumerations_come_from_botocore() -> None:
    assert "python3.12" in enum("lambda", "Runtime")
    assert "POSTGRESQL" in enum("rds", "EngineFamily")
    with pytest.raises(KeyError):
        enum("lambda", "MemorySize")  # a range, not an enumeration
    assert cloudwatch_period_valid(60)
    assert cloudwatch_period_valid(10)
    assert not cloudwatch_period_valid(45)


@pytest.mark.parametrize("variant", ["dev", "prod-pgbouncer"])
def test_container_definition_is_valid_for_the_ecs_api(variant: str) -> None:
    """The container JSON as ECS's RegisterTaskDefinition input shape accepts it (botocore)."""
    task = stack(variant).one("aws:ecs/taskDefinition:TaskDefinition")
    containers = json.loads(task.input("containerDefinitions"))
    shape = (
        botocore.session.get_session().get_service_model("ecs").shape_for("ContainerDefinitions")
    )
    validate_parameters(containers, shape)
    broken: Any = [{**containers[0], "ulimits": [{"name": "nofile", "softLimit": "many"}]}]
    with pytest.raises(ParamValidationError):
        validate_parameters(broken, shape)


def _api_shape(service: str, operation: str) -> Any:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation).input_shape


def _tags(record: ResourceRecord) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in (record.input("tags") or {}).items()]


def _alarm_request(alarm: ResourceRecord) -> dict[str, Any]:
    request: dict[str, Any] = {
        "AlarmName": alarm.input("name"),
        "AlarmDescription": alarm.input("alarmDescription"),
        "ComparisonOperator": alarm.input("comparisonOperator"),
        "Threshold": float(alarm.input("threshold")),
        "EvaluationPeriods": alarm.input("evaluationPeriods"),
        "DatapointsToAlarm": alarm.input("datapointsToAlarm"),
        "TreatMissingData": alarm.input("treatMissingData"),
        "AlarmActions": alarm.input("alarmActions"),
        "OKActions": alarm.input("okActions"),
        "Tags": _tags(alarm),
    }
    queries = alarm.input("metricQueries")
    if not queries:
        return request | {
            "Namespace": alarm.input("namespace"),
            "MetricName": alarm.input("metricName"),
            "Statistic": alarm.input("statistic"),
            "Period": alarm.input("period"),
            "Dimensions": [{"Name": k, "Value": v} for k, v in alarm.input("dimensions").items()],
        }
    metrics = []
    for query in queries:
        entry: dict[str, Any] = {"Id": query["id"], "ReturnData": bool(query.get("returnData"))}
        if "expression" in query:
            entry |= {"Expression": query["expression"], "Label": query["label"]}
        else:
            metric = query["metric"]
            entry["MetricStat"] = {
                "Metric": {
                    "Namespace": metric["namespace"],
                    "MetricName": metric["metricName"],
                    "Dimensions": [
                        {"Name": k, "Value": v} for k, v in metric["dimensions"].items()
                    ],
                },
                "Period": metric["period"],
                "Stat": metric["stat"],
            }
        metrics.append(entry)
    return request | {"Metrics": metrics}


@pytest.mark.parametrize("variant", ["dev", "prod", "prod-pgbouncer"])
def test_alarms_are_valid_put_metric_alarm_requests(variant: str) -> None:
    shape = _api_shape("cloudwatch", "PutMetricAlarm")
    for alarm in stack(variant).of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        validate_parameters(_alarm_request(alarm), shape)


@pytest.mark.parametrize("variant", ["dev", "prod-iam"])
def test_functions_are_valid_create_function_requests(variant: str) -> None:
    shape = _api_shape("lambda", "CreateFunction")
    for fn in stack(variant).of_type("aws:lambda/function:Function"):
        request = {
            "FunctionName": fn.input("name"),
            "Runtime": fn.input("runtime"),
            "Role": fn.input("role"),
            "Handler": fn.input("handler"),
            "Code": {"ZipFile": b"PK"},
            "MemorySize": fn.input("memorySize"),
            "Timeout": fn.input("timeout"),
            "Architectures": fn.input("architectures"),
            "Environment": {"Variables": fn.input("environment")["variables"]},
            "VpcConfig": {
                "SubnetIds": fn.input("vpcConfig")["subnetIds"],
                "SecurityGroupIds": fn.input("vpcConfig")["securityGroupIds"],
            },
            "LoggingConfig": {
                "LogFormat": fn.input("loggingConfig")["logFormat"],
                "LogGroup": fn.input("loggingConfig")["logGroup"],
            },
            "Layers": fn.input("layers") or [],
            "Tags": fn.input("tags"),
        }
        validate_parameters(request, shape)


@pytest.mark.parametrize("variant", ["prod", "prod-iam", "dev-rds-proxy"])
def test_proxy_is_a_valid_create_db_proxy_request(variant: str) -> None:
    proxy = stack(variant).one("aws:rds/proxy:Proxy")
    request = {
        # Generated by Pulumi (the logical name and a suffix; the offline mocks do the same).
        "DBProxyName": proxy.input("name") or proxy.outputs["name"],
        "EngineFamily": proxy.input("engineFamily"),
        "Auth": [
            {
                "AuthScheme": auth["authScheme"],
                "SecretArn": auth["secretArn"],
                "IAMAuth": auth["iamAuth"],
                "ClientPasswordAuthType": auth["clientPasswordAuthType"],
                "Description": auth["description"],
            }
            for auth in proxy.input("auths")
        ],
        "RoleArn": proxy.input("roleArn"),
        "VpcSubnetIds": proxy.input("vpcSubnetIds"),
        "VpcSecurityGroupIds": proxy.input("vpcSecurityGroupIds"),
        "RequireTLS": proxy.input("requireTls"),
        "IdleClientTimeout": proxy.input("idleClientTimeout"),
        "DebugLogging": proxy.input("debugLogging"),
        "Tags": _tags(proxy),
    }
    validate_parameters(request, _api_shape("rds", "CreateDBProxy"))
    assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", request["DBProxyName"])
    assert len(request["DBProxyName"]) <= 63


def _name_rule(service: str, shape: str) -> tuple[int, re.Pattern[str] | None]:
    metadata = botocore.session.get_session().get_service_model(service).shape_for(shape).metadata
    pattern = metadata.get("pattern")
    return int(metadata["max"]), re.compile(pattern) if pattern else None


# Names the program sets, checked against the API model's length and pattern where it has them.
MODEL_NAMES = {
    "aws:rds/proxy:Proxy": ("name", "rds", "DBProxyName"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "logs", "LogGroupName"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("name", "cloudwatch", "AlarmName"),
    "aws:ecr/repository:Repository": ("name", "ecr", "RepositoryName"),
    "aws:lambda/layerVersion:LayerVersion": ("layerName", "lambda", "LayerName"),
}
# Limits the models do not state (they accept ARNs, or leave names unbounded), from the service
# documentation: Lambda function names 64 characters; load balancer and target group names 32,
# whose `name_prefix` may have 6 characters before the generated part.
DOCUMENTED_NAMES = {
    "aws:lambda/function:Function": ("name", 64),
    "aws:lb/loadBalancer:LoadBalancer": ("namePrefix", 6),
    "aws:lb/targetGroup:TargetGroup": ("namePrefix", 6),
}
LONGEST_STACK = "limits-" + "x" * 23  # the longest stack name the program accepts


@pytest.mark.parametrize("base", ["dev", "prod-pgbouncer", "prod-iam"])
def test_names_fit_aws_limits_for_the_longest_stack_name(base: str) -> None:
    assert len(LONGEST_STACK) == 30
    run = run_offline(variant_settings(base).model_copy(update={"stack": LONGEST_STACK}))
    checked = 0
    for record in run.resources:
        if record.type in MODEL_NAMES:
            key, service, shape = MODEL_NAMES[record.type]
            high, pattern = _name_rule(service, shape)
            # A generated name (no fixed one set) as the offline mocks generate it.
            name = record.input(key) or record.outputs[key]
            assert len(name) <= high, (record.type, name)
            assert pattern is None or pattern.fullmatch(name), (record.type, name)
            checked += 1
        if record.type in DOCUMENTED_NAMES:
            key, high = DOCUMENTED_NAMES[record.type]
            assert len(record.input(key)) <= high, (record.type, record.input(key))
            checked += 1
        if record.type == "aws:iam/role:Role":
            # AWS appends 26 characters to a role's name prefix.
            high, pattern = _name_rule("iam", "roleNameType")
            prefix = record.input("namePrefix")
            assert not record.input("name")
            assert len(prefix) + 26 <= high
            assert pattern is not None
            assert pattern.fullmatch(prefix)
            checked += 1
        if record.type == "aws:rds/instance:Instance":
            # Auto-named: the logical name plus Pulumi's 8-character suffix, at most 63.
            assert len(record.name) + 8 <= 63
    assert checked > 15
