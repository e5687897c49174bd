"""Workloads in the AWS program under Pulumi mocks: secrets, pooler, functions, RDS Proxy.

A stack without workloads registers nothing new (dev below); the `workloads` example stack
gets one secret and one verifier secret per workload role, its functions read their own role's
secret, the PgBouncer task renders the `[users]` pools, and RDS Proxy gets one auth entry per
role (its pool stays one per target group, see infra/workloads.py).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import yaml

from infra.offline import OfflineRun, ResourceRecord, run_offline
from infra.settings import load_stack, settings_from_pulumi_config, stack_file
from pgbouncer import environment as task_env
from pgbouncer import scram
from pgbouncer.config import UserPool

FUNCTION = "aws:lambda/function:Function"
SECRET = "aws:secretsmanager/secret:Secret"


@functools.cache
def run(stack: str, pooler: str | None = None) -> OfflineRun:
    if pooler is None:
        return run_offline(load_stack(stack))
    config: dict[str, Any] = dict(yaml.safe_load(stack_file(stack).read_text())["config"])
    config["slotguard:pooler"] = {"kind": pooler}
    return run_offline(settings_from_pulumi_config(config, stack=stack))


def env_of(function: ResourceRecord) -> dict[str, str]:
    return dict(function.input("environment")["variables"])


def function(r: OfflineRun, key: str) -> ResourceRecord:
    return r.one(FUNCTION, f"-{key}-function")


def secret_arn(r: OfflineRun, role: str) -> str:
    """The ARN the mocks gave the role's own secret (not its verifier secret)."""
    for resource in r.of_type(SECRET):
        prefix = resource.input("namePrefix") or ""
        if prefix.endswith(f"/{role}-"):
            return str(resource.outputs["arn"])
    raise LookupError(role)


def test_a_stack_without_workloads_registers_nothing_new() -> None:
    r = run("dev")
    assert not [res.name for res in r.resources if "workload" in res.name]
    assert not [k for k in env_of(r.one(FUNCTION, "-bootstrap-function")) if "WORKLOAD" in k]
    task = r.one("aws:ecs/taskDefinition:TaskDefinition")
    (container,) = json.loads(task.input("containerDefinitions"))
    assert task_env.USER_POOLS_VARIABLE not in {e["name"] for e in container["environment"]}


def test_each_workload_role_has_its_secrets_and_its_functions_read_them() -> None:
    r = run("workloads")
    reports_role = r.budget.workloads["reports"].role
    reports_secret = secret_arn(r, reports_role)
    assert env_of(function(r, "reports"))["DB_SECRET_ARN"] == reports_secret
    assert env_of(function(r, "reports"))["DB_USER"] == reports_role
    assert env_of(function(r, "orders"))["DB_SECRET_ARN"] == r.outputs["app_user_secret_arn"]
    policy = r.one("aws:iam/rolePolicy:RolePolicy", "-reports-policy")
    (own,) = [s for s in json.loads(policy.input("policy"))["Statement"] if s["Sid"] == "OwnSecret"]
    assert own["Resource"] == reports_secret
    bootstrap = env_of(r.one(FUNCTION, "-bootstrap-function"))
    assert bootstrap[f"WORKLOAD_SECRET_ARN_{reports_role.upper()}"] == reports_secret
    # The bootstrap's settings are its own configuration, not its invocation event.
    event = json.loads(bootstrap["BOOTSTRAP_CONFIG"])
    assert [w["name"] for w in event["workloads"]] == [reports_role]


def test_the_pgbouncer_task_reads_back_the_workloads_pools() -> None:
    r = run("workloads")
    reports = r.budget.workloads["reports"]
    task = r.one("aws:ecs/taskDefinition:TaskDefinition")
    (container,) = json.loads(task.input("containerDefinitions"))
    env = {e["name"]: e["value"] for e in container["environment"]}
    injected = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    name = f"{task_env.USER_VERIFIER_PREFIX}{reports.role.upper()}"
    assert ":scram_verifier::" in injected[name]
    verifier = scram.make_verifier("pw", b"0123456789abcdef")
    env |= {
        f"{task_env.USER_VERIFIER_PREFIX}APP_USER": verifier,
        name: verifier,
        "PGBOUNCER_STATS_PASSWORD": "x",
        "PGBOUNCER_CLIENT_TLS_CERT": "cert",
        "PGBOUNCER_CLIENT_TLS_KEY": "key",
    }
    pb = r.budget.pgbouncer
    assert pb is not None
    cfg = task_env.read(env, version=(1, 24), fd_limit=pb.file_descriptors)
    assert cfg.settings.default_pool_size == r.budget.default_pool_size == 7
    assert cfg.settings.user_pools == (
        UserPool(reports.role, 2, 3, idle_transaction_timeout_s=reports.idle_transaction_timeout_s),
    )
    assert set(cfg.verifiers) == {"app_user", reports.role}
    execution = r.one("aws:iam/rolePolicy:RolePolicy", "-execution-policy")
    (inject,) = [
        s for s in json.loads(execution.input("policy"))["Statement"] if s["Sid"] == "InjectSecrets"
    ]
    # app_user's, its alternating-users clone's and reports' verifiers, the internal secret.
    assert len(inject["Resource"]) == 4


def test_rds_proxy_gets_one_auth_per_role_and_one_pool() -> None:
    r = run("workloads", "rds-proxy")
    proxy = r.one("aws:rds/proxy:Proxy")
    auths = proxy.input("auths")
    reports_role = r.budget.workloads["reports"].role
    arns = [a["secretArn"] for a in auths]
    # app_user's login, its standby login (alternating-users rotation), then the workload's.
    assert len(arns) == 3
    assert arns[0] == r.outputs["app_user_secret_arn"]
    assert arns[2] == secret_arn(r, reports_role)
    assert len(r.of_type("aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup")) == 1
    assert any("one connection pool per target group" in w for w in r.budget.warnings)


def test_rds_proxy_pool_settings_belong_to_the_target_group_not_to_an_auth_entry() -> None:
    """What infra/workloads.py relies on to say RDS Proxy cannot isolate workloads' pools.

    Source: the RDS API reference as botocore ships it. CreateDBProxy `Auth` is a list of
    UserAuthConfig (one per secret: Description, UserName, AuthScheme, SecretArn, IAMAuth,
    ClientPasswordAuthType), none of which sizes a pool; ConnectionPoolConfiguration "Specifies
    the settings that control the size and behavior of the connection pool associated with a
    DBProxyTargetGroup", is set by ModifyDBProxyTargetGroup, and MaxConnectionsPercent is "the
    maximum size of the connection pool for each target in a target group"
    (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ConnectionPoolConfiguration.html).
    """
    import botocore.session

    model = botocore.session.get_session().get_service_model("rds")
    create: Any = model.operation_model("CreateDBProxy").input_shape
    auth = create.members["Auth"]
    assert auth.type_name == "list"
    entry = set(auth.member.members)
    assert "SecretArn" in entry
    assert not {"ConnectionPoolConfig", "MaxConnectionsPercent"} & entry
    modify: Any = model.operation_model("ModifyDBProxyTargetGroup").input_shape
    assert "ConnectionPoolConfig" in modify.members
    pool = model.shape_for("ConnectionPoolConfiguration")
    assert "DBProxyTargetGroup" in (pool.documentation or "")
    assert "each target in a target group" in (
        pool.members["MaxConnectionsPercent"].documentation or ""  # type: ignore[attr-defined]
    )
