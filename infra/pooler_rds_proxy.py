"""RDS Proxy in front of the instance: TLS required, Secrets Manager auth, the budget's pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.budget import Budget
from infra.functions import assume_role_policy, role_name_prefix
from infra.packaging import AMAZON_ROOTS_ARCNAME
from infra.settings import StackSettings

ENGINE_FAMILY = "POSTGRESQL"
# Where Lambda unpacks a function's .zip: LAMBDA_TASK_ROOT, /var/task.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
LAMBDA_TASK_ROOT = "/var/task"
DEFAULT_TARGET_GROUP = "default"


@dataclass
class RdsProxyArgs:
    settings: StackSettings
    budget: Budget
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    database_identifier: pulumi.Input[str]
    app_user_secret_arn: pulumi.Input[str]
    tags: dict[str, str]
    # Each workload's role secret: one more auth entry each (the pool stays shared).
    workload_secret_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    # The standby login's secret (alternating users): the proxy accepts both logins.
    app_user_standby_secret_arn: pulumi.Input[str] | None = None
    # Aurora: the proxy's target is the cluster, and readers get a read-only proxy endpoint.
    database_is_cluster: bool = False
    read_only_endpoint: bool = False


def _secret_resources(args: RdsProxyArgs) -> pulumi.Input[str] | list[pulumi.Input[str]]:
    """The secrets the proxy reads: app_user's alone (as before), or it, its standby login's
    (alternating users) and the workloads'."""
    standby = args.app_user_standby_secret_arn
    extra = [*([standby] if standby is not None else []), *args.workload_secret_arns.values()]
    if not extra:
        return args.app_user_secret_arn
    return [args.app_user_secret_arn, *extra]


def _auth_resource_prefix(proxy_arn: str) -> str:
    """The `rds-db:connect` resource prefix of a proxy: `arn:...:rds-db:...:dbuser:prx-...`."""
    parts = proxy_arn.split(":")
    if len(parts) < 7:
        return ""
    partition, region, account, resource_id = parts[1], parts[3], parts[4], parts[6]
    return f"arn:{partition}:rds-db:{region}:{account}:dbuser:{resource_id}"


class RdsProxyPooler(pulumi.ComponentResource):
    """The proxy, its role, its default target group's pool and its target."""

    kind = "rds-proxy"
    endpoint: pulumi.Output[str]
    port: int
    auth_resource: pulumi.Output[str] | None
    client_ca_layer_arn: pulumi.Output[str] | None = None
    # The Amazon roots the packaging builder ships (see AMAZON_ROOTS_ARCNAME): libpq's `system`
    # finds no roots on Lambda with psycopg-binary's OpenSSL.
    client_sslrootcert: str = f"{LAMBDA_TASK_ROOT}/{AMAZON_ROOTS_ARCNAME}"
    proxy_name: pulumi.Output[str]
    dimensions: dict[str, pulumi.Input[str]]
    health_dimensions: dict[str, dict[str, pulumi.Input[str]]]

    def __init__(
        self, name: str, args: RdsProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:pooler:RdsProxy", name, None, opts)
        s, budget = args.settings, args.budget
        rp = budget.rds_proxy
        if rp is None:
            raise ValueError("the budget has no RDS Proxy section for an rds-proxy pooler")
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        role = aws.iam.Role(
            f"{name}-role",
            name_prefix=role_name_prefix(f"slotguard-{s.stack}-proxy"),
            assume_role_policy=assume_role_policy("rds.amazonaws.com"),
            description="RDS Proxy: reads the app_user secret to log in to the database",
            tags=tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AppUserSecret",
                            "Effect": "Allow",
                            "Action": "secretsmanager:GetSecretValue",
                            "Resource": _secret_resources(args),
                        }
                    ],
                }
            ),
            opts=child,
        )
        # No fixed name: Pulumi generates one, so a replacement never collides with the old proxy.
        proxy = aws.rds.Proxy(
            f"{name}-proxy",
            engine_family=ENGINE_FAMILY,
            require_tls=True,
            idle_client_timeout=rp.idle_client_timeout_s,
            debug_logging=False,  # it would log SQL text, parameters included
            role_arn=role.arn,
            vpc_subnet_ids=args.subnet_ids,
            vpc_security_group_ids=[args.security_group_id],
            auths=[
                aws.rds.ProxyAuthArgs(
                    auth_scheme="SECRETS",
                    secret_arn=args.app_user_secret_arn,
                    iam_auth="REQUIRED" if rp.iam_auth else "DISABLED",
                    client_password_auth_type="POSTGRES_SCRAM_SHA_256",  # noqa: S106 - a scheme name
                    description=f"{budget.app_user.name}, the functions' role",
                ),
                *(
                    [
                        aws.rds.ProxyAuthArgs(
                            auth_scheme="SECRETS",
                            secret_arn=args.app_user_standby_secret_arn,
                            iam_auth="REQUIRED" if rp.iam_auth else "DISABLED",
                            client_password_auth_type="POSTGRES_SCRAM_SHA_256",  # noqa: S106
                            description=f"{budget.app_user.name}'s standby login (rotation)",
                        )
                    ]
                    if args.app_user_standby_secret_arn is not None
                    else []
                ),
                # A workload's role: its own secret, hence its own login and role settings; the
                # connections still come from the one default target group's pool.
                *[
                    aws.rds.ProxyAuthArgs(
                        auth_scheme="SECRETS",
                        secret_arn=args.workload_secret_arns[w.name],
                        iam_auth="REQUIRED" if rp.iam_auth else "DISABLED",
                        client_password_auth_type="POSTGRES_SCRAM_SHA_256",  # noqa: S106
                        description=f"{w.role}, workload {w.name}",
                    )
                    for w in budget.workloads.values()
                ],
            ],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        aws.rds.ProxyDefaultTargetGroup(
            f"{name}-pool",
            db_proxy_name=proxy.name,
            connection_pool_config=aws.rds.ProxyDefaultTargetGroupConnectionPoolConfigArgs(
                max_connections_percent=rp.max_connections_percent,
                max_idle_connections_percent=rp.max_idle_connections_percent,
                connection_borrow_timeout=rp.connection_borrow_timeout_s,
            ),
            opts=child,
        )
        aws.rds.ProxyTarget(
            f"{name}-target",
            db_proxy_name=proxy.name,
            target_group_name=DEFAULT_TARGET_GROUP,
            # A cluster is registered by its cluster identifier; RDS Proxy then follows the
            # writer through failovers by itself.
            db_instance_identifier=None if args.database_is_cluster else args.database_identifier,
            db_cluster_identifier=args.database_identifier if args.database_is_cluster else None,
            opts=child,
        )
        self.read_endpoint: pulumi.Output[str] | None = None
        if args.read_only_endpoint:
            # A proxy endpoint with target_role READ_ONLY reaches the cluster's readers only
            # (pulumi-aws `rds.ProxyEndpoint`: "Valid values are `READ_WRITE` and `READ_ONLY`").
            reader = aws.rds.ProxyEndpoint(
                f"{name}-read",
                db_proxy_name=proxy.name,
                db_proxy_endpoint_name=f"slotguard-{s.stack}-read",
                vpc_subnet_ids=args.subnet_ids,
                vpc_security_group_ids=[args.security_group_id],
                target_role="READ_ONLY",
                tags=tags,
                opts=child,
            )
            self.read_endpoint = reader.endpoint
        self.port = rp.port
        self.endpoint = proxy.endpoint
        self.proxy_name = proxy.name
        self.dimensions = {"ProxyName": proxy.name}
        # AvailabilityPercentage is published per target group and role (dimension set 4).
        # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy.monitoring.html
        self.health_dimensions = {
            "proxy_availability_percent": {
                "ProxyName": proxy.name,
                "TargetGroup": DEFAULT_TARGET_GROUP,
                "TargetRole": "READ_WRITE",
            }
        }
        self.auth_resource = proxy.arn.apply(_auth_resource_prefix) if rp.iam_auth else None
        self.register_outputs({"endpoint": self.endpoint, "port": rp.port})
