"""Aurora PostgreSQL: a cluster with a writer and optional readers, provisioned or Serverless v2.

The same promises as the RDS instance (infra/database.py): private, encrypted, TLS forced, SCRAM,
the master password managed by RDS in Secrets Manager, the budget's `max_connections` pinned in
the instance parameter group (every instance has the writer's class, so one group fits all and
a failover changes no number). What happens to a running stack: switching an existing stack's
`database.kind` replaces the database (a new cluster, new data); the kit never does that
implicitly, and `environment: prod` protects the cluster (deletion protection, final snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.budget import Budget
from infra.database import (
    CA_CERT_IDENTIFIER,
    MASTER_USERNAME,
    SNAPSHOT_SUFFIX_BYTES,
    STATIC_PARAMETERS,
)
from infra.settings import StackSettings

ENGINE = "aurora-postgresql"
# Aurora PostgreSQL publishes one log type to CloudWatch Logs: `postgresql`
# (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/USER_LogAccess.Procedural.UploadtoCloudWatch.html).
PROD_LOG_EXPORTS = ("postgresql",)
# The writer is promoted last among equals: readers take tiers after it (0 is first to promote).
WRITER_PROMOTION_TIER = 0
READER_PROMOTION_TIER = 1


@dataclass
class AuroraArgs:
    settings: StackSettings
    budget: Budget
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    tags: dict[str, str]


def cluster_parameters() -> dict[str, str]:
    """Cluster-level parameters: TLS and SCRAM for every instance of the cluster."""
    return {"rds.force_ssl": "1", "password_encryption": "scram-sha-256"}


def instance_parameters(budget: Budget) -> dict[str, str]:
    """Instance-level parameters: the budget's connection numbers (each instance's ceiling)."""
    return {
        "max_connections": str(budget.max_connections),
        "superuser_reserved_connections": str(budget.reserved_connections),
        "idle_in_transaction_session_timeout": str(budget.database_idle_in_transaction_ms),
    }


def _parameters(values: dict[str, str]) -> list[aws.rds.ParameterGroupParameterArgs]:
    return [
        aws.rds.ParameterGroupParameterArgs(
            name=key,
            value=value,
            apply_method="pending-reboot" if key in STATIC_PARAMETERS else "immediate",
        )
        for key, value in values.items()
    ]


class AuroraDatabase(pulumi.ComponentResource):
    """The cluster, its instances, its subnet group and both parameter groups."""

    cluster: aws.rds.Cluster
    instances: dict[str, aws.rds.ClusterInstance]
    parameter_group: aws.rds.ParameterGroup
    address: pulumi.Output[str]
    reader_address: pulumi.Output[str] | None
    port: pulumi.Output[int]
    identifier: pulumi.Output[str]
    arn: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    resource_id: pulumi.Output[str]
    # role ("writer", "reader-1", ...) -> instance identifier, for per-instance alarms.
    instance_identifiers: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: AuroraArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:database:AuroraDatabase", name, None, opts)
        s, db = args.settings, args.settings.database
        a = db.aurora
        child = pulumi.ResourceOptions(parent=self)
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description="Private subnets of the slotguard Aurora cluster",
            tags=args.tags,
            opts=child,
        )
        cluster_group = aws.rds.ClusterParameterGroup(
            f"{name}-cluster-params",
            family=db.parameter_group_family,
            description=f"slotguard {s.stack}: TLS and SCRAM",
            parameters=[
                aws.rds.ClusterParameterGroupParameterArgs(
                    name=key, value=value, apply_method="pending-reboot"
                )
                for key, value in cluster_parameters().items()
            ],
            tags=args.tags,
            opts=child,
        )
        self.parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=db.parameter_group_family,
            description=f"slotguard {s.stack}: connection budget of each instance",
            parameters=_parameters(instance_parameters(args.budget)),
            tags=args.tags,
            opts=child,
        )
        final_snapshot: pulumi.Output[str] | None = None
        if s.is_prod:
            suffix = random.RandomId(
                f"{name}-final-snapshot", byte_length=SNAPSHOT_SUFFIX_BYTES, opts=child
            )
            final_snapshot = suffix.hex.apply(lambda h: f"slotguard-{s.stack}-final-{h}")
        scaling = (
            aws.rds.ClusterServerlessv2ScalingConfigurationArgs(
                min_capacity=a.min_capacity_acu,
                max_capacity=a.max_capacity_acu,
                # Only meaningful (and only accepted) with a minimum of 0 ACU.
                seconds_until_auto_pause=a.seconds_until_auto_pause if a.auto_pause else None,
            )
            if a.serverless
            else None
        )
        self.cluster = aws.rds.Cluster(
            f"{name}-cluster",
            engine=ENGINE,
            engine_mode="provisioned",  # Serverless v2 instances live in provisioned clusters
            engine_version=db.engine_version,
            database_name=db.name,
            port=db.port,
            master_username=MASTER_USERNAME,
            manage_master_user_password=True,
            iam_database_authentication_enabled=False,
            storage_encrypted=True,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[args.security_group_id],
            db_cluster_parameter_group_name=cluster_group.name,
            serverlessv2_scaling_configuration=scaling,
            backup_retention_period=max(1, s.backup_retention_days),  # Aurora keeps at least 1
            deletion_protection=s.deletion_protection,
            skip_final_snapshot=not s.is_prod,
            final_snapshot_identifier=final_snapshot,
            enabled_cloudwatch_logs_exports=list(PROD_LOG_EXPORTS) if s.is_prod else None,
            copy_tags_to_snapshot=True,
            apply_immediately=not s.is_prod,
            tags=args.tags,
            opts=child,
        )
        self.instances = {}
        roles = ["writer", *(f"reader-{i}" for i in range(1, a.readers + 1))]
        for role in roles:
            self.instances[role] = aws.rds.ClusterInstance(
                f"{name}-{role}",
                cluster_identifier=self.cluster.id,
                engine=aws.rds.EngineType.AURORA_POSTGRESQL,
                engine_version=self.cluster.engine_version,
                instance_class=a.instance_class,
                db_parameter_group_name=self.parameter_group.name,
                db_subnet_group_name=subnet_group.name,
                publicly_accessible=False,
                ca_cert_identifier=CA_CERT_IDENTIFIER,
                auto_minor_version_upgrade=True,
                promotion_tier=WRITER_PROMOTION_TIER if role == "writer" else READER_PROMOTION_TIER,
                apply_immediately=not s.is_prod,
                tags=args.tags,
                opts=child,
            )
        # The cluster endpoint always names the current writer (a failover moves it).
        self.address = self.cluster.endpoint
        self.reader_address = self.cluster.reader_endpoint if a.readers else None
        self.port = self.cluster.port
        self.identifier = self.cluster.cluster_identifier
        self.arn = self.cluster.arn
        self.resource_id = self.cluster.cluster_resource_id
        self.master_secret_arn = self.cluster.master_user_secrets.apply(_master_secret_arn)
        self.instance_identifiers = {
            role: instance.identifier for role, instance in self.instances.items()
        }
        self.register_outputs(
            {
                "address": self.address,
                "identifier": self.identifier,
                "master_secret_arn": self.master_secret_arn,
            }
        )

    @property
    def ready(self) -> list[pulumi.Resource]:
        """What the bootstrap waits for: the cluster and its writer."""
        return [self.cluster, self.instances["writer"]]


def _master_secret_arn(secrets: Sequence[aws.rds.outputs.ClusterMasterUserSecret]) -> str:
    if not secrets or not secrets[0].secret_arn:
        return ""
    return secrets[0].secret_arn
