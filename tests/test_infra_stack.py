"""The AWS stack under Pulumi mocks: every acceptance rule, for every example variant.

Each variant (both pooler kinds, both network modes, IAM auth, an existing VPC behind a NAT) runs
the real program once through `run_offline`; the assertions read what it registered.
"""

from __future__ import annotations

import base64
import functools
import importlib
import inspect
import json
from typing import Any

import pytest

from infra.alarm_rules import alarm_rules
from infra.database import MASTER_USERNAME
from infra.offline import (
    VARIANTS,
    OfflineRun,
    ResourceRecord,
    Secret,
    reveal,
    run_offline,
    variant_settings,
)
from infra.settings import StackSettings
from pgbouncer import environment as task_env
from pgbouncer import scram

PGBOUNCER = [v for v in VARIANTS if variant_settings(v).pooler.kind == "pgbouncer"]
RDS_PROXY = [v for v in VARIANTS if variant_settings(v).pooler.kind == "rds-proxy"]

FUNCTION = "aws:lambda/function:Function"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
INSTANCE = "aws:rds/instance:Instance"


@functools.cache
def stack(variant: str) -> OfflineRun:
    return run_offline(variant_settings(variant))


def app_functions(run: OfflineRun) -> list[ResourceRecord]:
    return [f for f in run.of_type(FUNCTION) if not f.name.endswith("-bootstrap-function")]


def bootstrap_function(run: OfflineRun) -> ResourceRecord:
    return run.one(FUNCTION, "-bootstrap-function")


def env_of(function: ResourceRecord) -> dict[str, str]:
    return dict(function.input("environment")["variables"])


def walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every leaf of an input value, secrets left wrapped."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in walk(v, f"{path}[{i}]")]
    return [(path, value)]


# -- the pooler is the only way functions reach the database -------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_function_host_is_the_pooler_never_the_database(variant: str) -> None:
    run = stack(variant)
    database = run.one(INSTANCE)
    pooler_endpoint = run.outputs["pooler_endpoint"]
    functions = app_functions(run)
    assert sorted(f.input("name") for f in functions) == sorted(
        f"slotguard-{variant}-{key}" for key in run.settings.functions
    )
    for function in functions:
        env = env_of(function)
        assert env["DB_HOST"] == pooler_endpoint
        assert env["DB_HOST"] != database.outputs["address"]
        assert env["DB_PORT"] == str(run.budget.pooler_port)
        # The environment is not computed from anything of the database instance.
        assert database.urn not in function.property_dependencies["environment"]
    # ...while the bootstrap alone connects to the database directly.
    assert env_of(bootstrap_function(run))["DB_HOST"] == database.outputs["address"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_function_environment_is_the_contract(variant: str) -> None:
    run = stack(variant)
    for function in app_functions(run):
        key = function.input("name").removeprefix(f"slotguard-{variant}-")
        env = env_of(function)
        for name, value in run.budget.function_environment(key).items():
            assert env[name] == value, name
        iam = run.budget.rds_proxy is not None and run.budget.rds_proxy.iam_auth
        assert env["DB_AUTH"] == ("iam" if iam else "secret")
        assert ("DB_SECRET_ARN" in env) is not iam
        assert env["DB_NAME"] == run.settings.database.name
        assert env["HEALTH_ALARM_PERCENT"] == str(run.settings.alarms.critical_percent)
        assert env["POWERTOOLS_SERVICE_NAME"] == key
        fb = run.budget.functions[key]
        # Unreserved is the provider's -1: "`-1` removes any concurrency limitations"
        # (pulumi-aws lambda_.Function reserved_concurrent_executions docstring).
        expected = -1 if fb.reserved_concurrency is None else fb.reserved_concurrency
        assert function.input("reservedConcurrentExecutions") == expected
        assert function.input("timeout") == fb.timeout_s
        assert function.input("vpcConfig")["subnetIds"], "functions run in the VPC"


# -- the security-group chain --------------------------------------------------------------------


def flows(run: OfflineRun) -> set[tuple[str, str, str, int]]:
    """(direction, group, peer, port) for every rule; groups named by their role."""
    roles = {sg.urn: sg.name.split("-sg-", 1)[1] for sg in run.of_type(SG)}
    by_id: dict[str, str] = {}
    for sg in run.of_type(SG):
        # Mock ids are derived from the resource; map them back through the rules' dependencies.
        by_id[sg.urn] = roles[sg.urn]
    result: set[tuple[str, str, str, int]] = set()
    for direction, type_ in (("in", INGRESS), ("out", EGRESS)):
        for rule in run.of_type(type_):
            deps = rule.property_dependencies
            group = roles[deps["securityGroupId"][0]]
            if "referencedSecurityGroupId" in deps:
                peer = roles[deps["referencedSecurityGroupId"][0]]
            elif rule.input("prefixListId"):
                peer = "s3-prefix-list"
            else:
                peer = rule.input("cidrIpv4")
            result.add((direction, group, peer, rule.input("fromPort")))
            assert rule.input("fromPort") == rule.input("toPort")
            assert rule.input("ipProtocol") == "tcp"
    return result


def expected_flows(settings: StackSettings, pooler_port: int) -> set[tuple[str, str, str, int]]:
    db = settings.database.port
    chain = [
        ("functions", "pooler-lb" if settings.pooler.kind == "pgbouncer" else "pooler", pooler_port)
    ]
    if settings.pooler.kind == "pgbouncer":
        chain.append(("pooler-lb", "pooler", pooler_port))
    chain += [("pooler", "db", db), ("bootstrap", "db", db)]
    callers = ["functions", "bootstrap"] + (
        ["pooler"] if settings.pooler.kind == "pgbouncer" else []
    )
    out: set[tuple[str, str, str, int]] = set()
    for source, target, port in chain:
        out |= {("out", source, target, port), ("in", target, source, port)}
    if settings.network.vpc_endpoints:
        for caller in callers:
            out |= {("out", caller, "endpoints", 443), ("in", "endpoints", caller, 443)}
        if settings.pooler.kind == "pgbouncer":
            out.add(("out", "pooler", "s3-prefix-list", 443))
    else:
        out |= {("out", caller, "0.0.0.0/0", 443) for caller in callers}
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_security_groups_are_exactly_the_chain(variant: str) -> None:
    run = stack(variant)
    assert flows(run) == expected_flows(run.settings, run.budget.pooler_port)
    for rule in run.of_type(INGRESS):
        assert not rule.input("cidrIpv4"), rule.name
        assert not rule.input("cidrIpv6"), rule.name
    for group in run.of_type(SG):
        assert not group.input("ingress"), "no inline rules"
        assert not group.input("egress"), "no inline rules"


# -- every number is the budget's ----------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_group_carries_the_budget(variant: str) -> None:
    run = stack(variant)
    group = run.one("aws:rds/parameterGroup:ParameterGroup")
    values = {p["name"]: p["value"] for p in group.input("parameters")}
    assert values["max_connections"] == str(run.budget.max_connections)
    db = run.settings.database
    # Every slot the budget keeps from ordinary roles is pinned (AWS knowledge center,
    # rds-postgresql-error-connection-slots: ordinary roles get max_connections -
    # superuser_reserved_connections - rds.rds_superuser_reserved_connections).
    assert values["superuser_reserved_connections"] == str(db.reserved_connections)
    assert values["rds.rds_superuser_reserved_connections"] == str(
        db.rds_superuser_reserved_connections
    )
    assert (
        int(values["superuser_reserved_connections"])
        + int(values["rds.rds_superuser_reserved_connections"])
        == run.budget.reserved_connections
    )
    assert values["idle_in_transaction_session_timeout"] == str(
        run.budget.database_idle_in_transaction_ms
    )
    assert values["rds.force_ssl"] == "1"
    assert values["password_encryption"] == "scram-sha-256"
    assert group.input("family") == run.settings.database.parameter_group_family
    methods = {p["name"]: p["applyMethod"] for p in group.input("parameters")}
    assert methods["max_connections"] == "pending-reboot"
    # pending-reboot is accepted for any parameter, static or dynamic (ModifyDBParameterGroup's
    # ApplyMethod: "pending-reboot" applies at the next reboot), so the slots change together.
    assert methods["rds.rds_superuser_reserved_connections"] == "pending-reboot"


@pytest.mark.parametrize("variant", PGBOUNCER)
def test_pgbouncer_task_reads_back_as_the_budget(variant: str) -> None:
    """The task definition's environment, read by the image's own reader, is the budget."""
    run = stack(variant)
    pb = run.budget.pgbouncer
    assert pb is not None
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    (container,) = json.loads(task.input("containerDefinitions"))
    env = {e["name"]: e["value"] for e in container["environment"]}
    injected = {s["name"] for s in container["secrets"]}
    assert {
        f"{task_env.USER_VERIFIER_PREFIX}APP_USER",
        # the alternating-users clone's (infra/rotation.py): both logins pass the pooler
        f"{task_env.USER_VERIFIER_PREFIX}APP_USER_CLONE",
        "PGBOUNCER_STATS_PASSWORD",
        "PGBOUNCER_CLIENT_TLS_CERT",
        "PGBOUNCER_CLIENT_TLS_KEY",
    } == injected
    verifier = scram.make_verifier("pw", b"0123456789abcdef")
    (verifier_source,) = [
        s["valueFrom"] for s in container["secrets"] if s["name"].endswith("APP_USER")
    ]
    # The verifier's own secret, one key, one pinned version (test_infra_aws_review guards it).
    assert ":scram_verifier::" in verifier_source
    env |= {
        f"{task_env.USER_VERIFIER_PREFIX}APP_USER": verifier,
        "PGBOUNCER_STATS_PASSWORD": "x",
        "PGBOUNCER_CLIENT_TLS_CERT": "cert",
        "PGBOUNCER_CLIENT_TLS_KEY": "key",
    }
    version = tuple(int(p) for p in pb.version.split(".")[:2])
    cfg = task_env.read(env, version=version, fd_limit=pb.file_descriptors)  # type: ignore[arg-type]
    s = cfg.settings
    assert s.processes == pb.processes_per_task
    assert s.default_pool_size == pb.pool_size
    assert s.reserve_pool_size == pb.reserve_pool
    assert s.max_db_connections == pb.max_db_connections
    assert s.max_client_conn == pb.max_client_conn
    assert s.query_wait_timeout_s == pb.query_wait_timeout_s
    assert s.client_idle_timeout_s == pb.client_idle_timeout_s
    assert s.idle_transaction_timeout_s == pb.idle_transaction_timeout_s
    assert s.listen_port == pb.port
    assert s.database_share == pb.server_connections_per_task
    assert s.database.dbname == run.settings.database.name
    assert container["ulimits"][0]["softLimit"] == pb.file_descriptors
    # PgBouncer's safe shutdown ends before ECS kills the container.
    assert cfg.drain_timeout_s < container["stopTimeout"]
    assert container["healthCheck"]["command"] == ["CMD", "python", "-m", "pgbouncer.health"]
    service = run.one("aws:ecs/service:Service")
    assert service.input("desiredCount") == pb.tasks >= 2
    # Never more tasks than the budget's deploy plan sized every pool for.
    assert pb.tasks * service.input("deploymentMaximumPercent") // 100 <= pb.deploy.peak_tasks
    assert task.input("runtimePlatform")["cpuArchitecture"] == "ARM64"
    nlb = run.one("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.input("internal") is True
    assert nlb.input("loadBalancerType") == "network"
    listener = run.one("aws:lb/listener:Listener")
    assert listener.input("protocol") == "TCP"
    assert listener.input("port") == pb.port
    assert run.one("aws:lb/targetGroup:TargetGroup").input("healthCheck")["protocol"] == "TCP"


@pytest.mark.parametrize("variant", RDS_PROXY)
def test_rds_proxy_pool_is_the_budget(variant: str) -> None:
    run = stack(variant)
    rp = run.budget.rds_proxy
    assert rp is not None
    proxy = run.one("aws:rds/proxy:Proxy")
    assert proxy.input("requireTls") is True
    assert proxy.input("engineFamily") == "POSTGRESQL"
    assert proxy.input("idleClientTimeout") == rp.idle_client_timeout_s
    # The functions' login and the standby login (alternating users, infra/rotation.py).
    auth, standby = proxy.input("auths")
    assert auth["authScheme"] == standby["authScheme"] == "SECRETS"
    assert auth["secretArn"] == run.outputs["app_user_secret_arn"]
    assert standby["secretArn"] != auth["secretArn"]
    assert auth["iamAuth"] == standby["iamAuth"] == ("REQUIRED" if rp.iam_auth else "DISABLED")
    pool = run.one("aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup").input(
        "connectionPoolConfig"
    )
    assert pool["maxConnectionsPercent"] == rp.max_connections_percent
    assert pool["maxIdleConnectionsPercent"] == rp.max_idle_connections_percent
    assert pool["connectionBorrowTimeout"] == rp.connection_borrow_timeout_s
    target = run.one("aws:rds/proxyTarget:ProxyTarget")
    assert target.input("dbInstanceIdentifier")
    assert target.property_dependencies["dbInstanceIdentifier"] == (run.one(INSTANCE).urn,)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bootstrap_sets_the_budget_on_the_role(variant: str) -> None:
    run = stack(variant)
    invocation = run.one("aws:lambda/invocation:Invocation", "-bootstrap-run")
    # The function's own configuration carries the budget; the invocation only triggers a run.
    event = json.loads(env_of(bootstrap_function(run))["BOOTSTRAP_CONFIG"])
    assert json.loads(invocation.input("input")) == {}
    au = run.budget.app_user
    assert event["app_user"] == {
        "name": au.name,
        "connection_limit": au.connection_limit,
        "admin_margin": run.budget.admin_margin,
        "statement_timeout_ms": au.statement_timeout_ms,
        "idle_in_transaction_session_timeout_ms": au.idle_in_transaction_session_timeout_ms,
        "lock_timeout_ms": au.lock_timeout_ms,
        "search_path": [au.schema_name],
    }
    assert au.connection_limit == run.budget.pooler_ceiling
    assert event["migration_role"] == {"name": au.migration_role}
    assert event["database"] == run.settings.database.name
    triggers = invocation.input("triggers")
    assert json.loads(triggers["roles"]) == event
    assert len(triggers["migrations"]) == 64


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_alarms_are_the_budget_rules_each_with_an_action(variant: str) -> None:
    run = stack(variant)
    alarms = {
        a.input("name").removeprefix(f"slotguard-{variant}-"): a
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    topic = run.outputs["alarm_topic_arn"]
    expected: dict[str, float] = {}
    for rule in alarm_rules(run.budget):
        if rule.key.startswith("function-"):
            for key in run.settings.functions:
                expected[f"{key}-{rule.key.removeprefix('function-')}"] = rule.threshold
        else:
            expected[rule.key] = rule.threshold
    assert {k: a.input("threshold") for k, a in alarms.items()} == expected
    for alarm in alarms.values():
        assert alarm.input("alarmActions") == [topic]
        assert alarm.input("evaluationPeriods") == run.budget.alarms.evaluation_periods
        for metric in watched(alarm):
            assert metric["period"] == run.budget.alarms.period_s
    pb = run.budget.pgbouncer
    if pb is not None:
        # Totals over the tasks: each task publishes its own figure under the same dimensions.
        for key in ("pooler-waiting-clients", "pooler-client-connections"):
            queries = alarms[key].input("metricQueries")
            total = next(q for q in queries if q.get("returnData"))
            assert total["expression"] == f"per_task * {pb.tasks}"
            (metric,) = watched(alarms[key])
            assert metric["stat"] == "Average"
            assert metric["dimensions"]["Service"] == f"slotguard-{variant}-pgbouncer"
    kind_alarms = (
        {"pooler-waiting-clients", "pooler-oldest-wait"}
        if run.settings.pooler.kind == "pgbouncer"
        else {"proxy-pinned-connections", "proxy-borrow-latency"}
    )
    assert kind_alarms <= set(alarms)
    subscriptions = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert [s.input("endpoint") for s in subscriptions] == (
        [run.settings.alarms.email] if run.settings.alarms.email else []
    )
    dashboard = json.loads(run.one("aws:cloudwatch/dashboard:Dashboard").input("dashboardBody"))
    first = dashboard["widgets"][0]["properties"]
    assert first["metrics"][0][:2] == ["AWS/RDS", "DatabaseConnections"]
    lines = {a["label"]: a["value"] for a in first["annotations"]["horizontal"]}
    assert lines["max_connections"] == run.budget.max_connections


# -- the database ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_database_is_private_encrypted_and_prod_is_protected(variant: str) -> None:
    run = stack(variant)
    db = run.one(INSTANCE)
    assert db.input("publiclyAccessible") is False
    assert db.input("storageEncrypted") is True
    assert db.input("manageMasterUserPassword") is True
    assert "password" not in db.inputs
    assert db.input("username") == MASTER_USERNAME
    assert db.input("engine") == "postgres"
    assert db.input("engineVersion") == run.settings.database.engine_version
    if run.settings.is_prod:
        assert db.input("deletionProtection") is True
        assert db.input("skipFinalSnapshot") is False
        assert db.input("finalSnapshotIdentifier")
        assert db.input("backupRetentionPeriod") == 7
        assert db.input("multiAz") is True
    else:
        assert db.input("deletionProtection") is False
        assert db.input("backupRetentionPeriod") == run.settings.backup_retention_days


# -- ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bootstrap_runs_after_the_database_and_before_the_functions(variant: str) -> None:
    run = stack(variant)
    invocation = run.one("aws:lambda/invocation:Invocation", "-bootstrap-run")
    database = run.one(INSTANCE)
    assert database.urn in invocation.dependencies
    assert run.depends_on(invocation, bootstrap_function(run))
    for version in run.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        if "-app-" in version.name or "-migrator-" in version.name:
            assert version.urn in invocation.dependencies
    for function in app_functions(run):
        assert invocation.urn in function.dependencies, function.name
    assert not run.depends_on(bootstrap_function(run), invocation)


# -- IAM, secrets, tags ---------------------------------------------------------------------------


def watched(alarm: ResourceRecord) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric-math queries."""
    if alarm.input("metricQueries"):
        return [q["metric"] for q in alarm.input("metricQueries") if q.get("metric")]
    return [
        {
            "namespace": alarm.input("namespace"),
            "metricName": alarm.input("metricName"),
            "stat": alarm.input("statistic"),
            "period": alarm.input("period"),
            "dimensions": alarm.input("dimensions"),
        }
    ]


def statements(run: OfflineRun) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        document = json.loads(policy.input("policy"))
        found += [(policy.name, s) for s in document["Statement"]]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_policy_grants_everything(variant: str) -> None:
    run = stack(variant)
    found = statements(run)
    assert found
    for name, statement in found:
        actions = as_list(statement["Action"])
        assert all(a != "*" and not a.endswith(":*") for a in actions), name
        if "*" in as_list(statement["Resource"]):
            # Only actions AWS offers no resource-level permission for may use `*`.
            assert set(actions) <= {
                "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
                "ecr:GetAuthorizationToken",
                "cloudwatch:PutMetricData",
            }, (name, actions)
    assert not run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_function_reads_only_its_own_credentials(variant: str) -> None:
    run = stack(variant)
    iam = run.budget.rds_proxy is not None and run.budget.rds_proxy.iam_auth
    for function in app_functions(run):
        role_policy = run.one(
            "aws:iam/rolePolicy:RolePolicy", function.name.removesuffix("-function") + "-policy"
        )
        document = json.loads(role_policy.input("policy"))
        credentials = [
            s for s in document["Statement"] if s["Sid"] in ("OwnSecret", "ProxyIamAuth")
        ]
        assert len(credentials) == 1
        (statement,) = credentials
        if iam:
            assert statement["Action"] == "rds-db:connect"
            assert statement["Resource"].startswith("arn:aws:rds-db:")
            assert statement["Resource"].endswith(f"/{run.budget.app_user.name}")
        else:
            assert statement["Action"] == "secretsmanager:GetSecretValue"
            assert statement["Resource"] == run.outputs["app_user_secret_arn"]
        logs = next(s for s in document["Statement"] if s["Sid"] == "OwnLogs")
        assert all(function.input("name") in arn for arn in logs["Resource"])


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_secrets_are_pulumi_secrets_never_plain(variant: str) -> None:
    run = stack(variant)
    for version in run.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        assert isinstance(version.inputs["secretString"], Secret)
    app = next(
        json.loads(v.input("secretString"))
        for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
        if v.name.endswith("-app-secret-version")
    )
    assert set(app) == {
        "username",
        "password",
        "engine",
        "host",
        "port",
        "dbname",
        "scram_verifier",
    }
    assert app["engine"] == "postgres"
    assert app["username"] == run.budget.app_user.name
    assert scram.matches(app["password"], app["scram_verifier"])
    assert app["host"] == run.one(INSTANCE).outputs["address"]
    # No generated password appears anywhere in a non-secret input of any resource.
    passwords = {
        json.loads(v.input("secretString")).get("password")
        for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    } - {None}
    assert passwords
    for record in run.resources:
        for path, leaf in walk(record.inputs):
            if isinstance(leaf, str):
                assert not any(p in leaf for p in passwords), (record.name, path)


def taggable(type_: str) -> bool:
    """Whether the provider's resource class takes `tags` (read from pulumi_aws itself)."""
    if not type_.startswith("aws:"):
        return False
    _, path, cls = type_.split(":")
    module = path.split("/")[0]
    package = importlib.import_module(f"pulumi_aws.{'lambda_' if module == 'lambda' else module}")
    return "tags" in inspect.signature(getattr(package, cls)._internal_init).parameters


@pytest.mark.parametrize("variant", ["dev", "prod", "prod-pgbouncer"])
def test_every_taggable_resource_carries_the_stack_tags(variant: str) -> None:
    run = stack(variant)
    checked = 0
    for record in run.resources:
        if record.custom and taggable(record.type):
            tags = record.input("tags") or {}
            assert run.settings.all_tags.items() <= tags.items(), record.name
            checked += 1
    assert checked > 20


# -- structure and outputs ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_components_own_their_children(variant: str) -> None:
    run = stack(variant)
    components = {r.urn: r for r in run.resources if r.is_component}
    assert {c.type for c in components.values()} >= {
        "slotguard:network:Network",
        "slotguard:database:Database",
        "slotguard:app_user:AppUser",
        "slotguard:functions:Functions",
        "slotguard:alarms:Alarms",
    }
    for record in run.resources:
        if record.custom:
            assert record.parent in components, record.name
            assert record.name.startswith(components[record.parent].name), record.name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stack_outputs(variant: str) -> None:
    out = stack(variant).outputs
    assert out["pooler_endpoint"]
    assert out["api_url"].startswith("https://")
    assert "#dashboards:name=" in out["dashboard_url"]
    assert out["alarm_topic_arn"].startswith("arn:aws:sns:")
    for key in ("app_user_secret_arn", "migrator_secret_arn", "master_secret_arn"):
        assert out[key].startswith("arn:aws:secretsmanager:"), key


def test_the_example_stacks_run_offline_in_seconds() -> None:
    stack("dev")  # the first run pays for importing the provider modules
    for name in ("dev", "prod"):
        run = run_offline(variant_settings(name))
        assert run.seconds < 3, f"{name}: {run.seconds:.2f} s"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_functions_verify_the_certificate_they_are_given(variant: str) -> None:
    from infra import packaging

    run = stack(variant)
    bootstrap_env = env_of(bootstrap_function(run))
    assert bootstrap_env["DB_SSLMODE"] == "verify-full"
    # The packaging builder ships the RDS CA bundle at exactly this place in the artifact.
    assert bootstrap_env["DB_SSLROOTCERT"] == f"/var/task/{packaging.CA_BUNDLE_ARCNAME}"
    for function in app_functions(run):
        env = env_of(function)
        assert env["DB_SSLMODE"] == "verify-full"
        if run.settings.pooler.kind == "pgbouncer":
            layer = run.one("aws:lambda/layerVersion:LayerVersion")
            assert function.input("layers") == [layer.outputs["arn"]]
            archive = layer.input("code")["archive"]
            ca_path = env["DB_SSLROOTCERT"].removeprefix("/opt/")
            assert (
                archive[ca_path]["text"]
                == run.one("tls:index/selfSignedCert:SelfSignedCert").outputs["certPem"]
            )
        else:
            # RDS Proxy's certificate chains to Amazon's roots, which the artifact ships.
            assert env["DB_SSLROOTCERT"] == f"/var/task/{packaging.AMAZON_ROOTS_ARCNAME}"
            assert not function.input("layers")
    if run.settings.pooler.kind == "pgbouncer":
        nlb = run.one("aws:lb/loadBalancer:LoadBalancer")
        request = run.one("tls:index/certRequest:CertRequest")
        assert request.input("dnsNames") == [nlb.outputs["dnsName"]]
        assert run.outputs["pooler_endpoint"] == nlb.outputs["dnsName"]


def test_a_redeploy_changes_no_secret() -> None:
    """The verifier's salt is a stored resource, so the same inputs give the same secret."""

    def secrets(run: OfflineRun) -> dict[str, str]:
        return {
            v.name: v.input("secretString")
            for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
        }

    first = secrets(run_offline(variant_settings("dev")))
    assert first == secrets(run_offline(variant_settings("dev")))
    app = json.loads(next(s for n, s in first.items() if n.endswith("-app-secret-version")))
    salt = run_offline(variant_settings("dev")).named("slotguard-dev-app-salt")
    assert salt.input("length") == scram.SALT_BYTES
    assert scram.parse(app["scram_verifier"]).iterations == scram.DEFAULT_ITERATIONS
    assert scram.parse(app["scram_verifier"]).salt == base64.b64decode(
        reveal(salt.outputs["base64"])
    )


def test_switching_the_login_rolls_no_pooler_task_and_keeps_every_secret_name() -> None:
    """Step 2 of a rotation (infra/rotation.py): only the two login secrets swap contents."""

    def records(login: str) -> OfflineRun:
        s = variant_settings("dev")
        return run_offline(
            s.model_copy(
                update={"app_user": s.app_user.model_copy(update={"current_login": login})}
            )
        )

    primary, clone = records("primary"), records("clone")
    task = "aws:ecs/taskDefinition:TaskDefinition"
    assert primary.one(task).inputs == clone.one(task).inputs  # no rolling deploy
    secret = "aws:secretsmanager/secret:Secret"
    assert {r.name: r.inputs for r in primary.of_type(secret)} == {
        r.name: r.inputs for r in clone.of_type(secret)
    }
    version = "aws:secretsmanager/secretVersion:SecretVersion"

    def login(run: OfflineRun, suffix: str) -> dict[str, str]:
        found: dict[str, str] = json.loads(reveal(run.one(version, suffix).input("secretString")))
        return found

    assert login(primary, "-app-secret-version")["username"] == "app_user"
    assert login(primary, "-app-standby-secret-version")["username"] == "app_user_clone"
    assert login(clone, "-app-secret-version") == login(primary, "-app-standby-secret-version")
    assert login(clone, "-app-standby-secret-version") == login(primary, "-app-secret-version")
