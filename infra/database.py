"""RDS PostgreSQL: private, encrypted, TLS forced, with the budget's connection numbers pinned.

The parameter group carries `max_connections` explicitly (RDS would otherwise derive it from the
instance memory and a class change would silently move every number of the budget), and the
master password is managed by RDS in Secrets Manager so it never passes through the program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.budget import Budget
from infra.lifecycle import LifecyclePlan, family, plan
from infra.settings import StackSettings

MASTER_USERNAME = "postgres"
# The CA RDS signs the server certificate with; the functions' RDS CA bundle includes it.
CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"
# Parameters PostgreSQL reads only at start; RDS applies them at the next reboot.
STATIC_PARAMETERS = frozenset(
    {
        "max_connections",
        "superuser_reserved_connections",
        "rds.rds_superuser_reserved_connections",
        "reserved_connections",
    }
)
# Logs `prod` exports to CloudWatch Logs: the server log and the major-version upgrade log, the two
# types RDS for PostgreSQL publishes (ExportableLogTypes of DescribeDBEngineVersions;
# https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_LogAccess.Concepts.PostgreSQL.html).
PROD_LOG_EXPORTS = ("postgresql", "upgrade")
# Random bytes after the final snapshot's name: each teardown of a re-created stack leaves a
# snapshot of its own instead of colliding with the one the previous teardown left.
SNAPSHOT_SUFFIX_BYTES = 4


@dataclass
class DatabaseArgs:
    settings: StackSettings
    budget: Budget
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    tags: dict[str, str]
    # The next update's plan against the running instance (infra.lifecycle); None: a new stack.
    lifecycle: LifecyclePlan | None = None


def parameters(settings: StackSettings, budget: Budget) -> dict[str, str]:
    """The parameter group's values: connection numbers from the budget, TLS and SCRAM forced.

    Every reserved-slot parameter the budget counts is written, so what the budget subtracts is
    what the server keeps, whatever RDS's defaults become.
    """
    db = settings.database
    values = {
        "max_connections": str(budget.max_connections),
        "superuser_reserved_connections": str(db.reserved_connections),
        "rds.rds_superuser_reserved_connections": str(db.rds_superuser_reserved_connections),
        "rds.force_ssl": "1",
        "password_encryption": "scram-sha-256",
        "idle_in_transaction_session_timeout": str(budget.database_idle_in_transaction_ms),
    }
    if db.pg_reserved_connections:
        values["reserved_connections"] = str(db.pg_reserved_connections)
    return values


class Database(pulumi.ComponentResource):
    """The instance, its subnet group and its parameter group."""

    instance: aws.rds.Instance
    parameter_group: aws.rds.ParameterGroup
    address: pulumi.Output[str]
    port: pulumi.Output[int]
    identifier: pulumi.Output[str]
    arn: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    resource_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:database:Database", name, None, opts)
        s, db = args.settings, args.settings.database
        child = pulumi.ResourceOptions(parent=self)

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description="Private subnets of the slotguard database",
            tags=args.tags,
            opts=child,
        )
        lifecycle = args.lifecycle if args.lifecycle is not None else plan(s, None)
        self.lifecycle = lifecycle
        # One group per family, named after it: a major upgrade creates the new family's group
        # beside the old one, and the old one stays declared (so Pulumi keeps it) until RDS
        # reports the instance on the new major. The running family's group takes the name the
        # kit used before (`-params`) as an alias, so an existing stack's group is not replaced.
        running = family(lifecycle.major_from or lifecycle.major_to)
        self.parameter_groups: dict[str, aws.rds.ParameterGroup] = {
            fam: aws.rds.ParameterGroup(
                f"{name}-params-{fam}",
                family=fam,
                description=f"slotguard {s.stack}: connection budget, TLS and SCRAM",
                parameters=[
                    aws.rds.ParameterGroupParameterArgs(
                        name=key,
                        value=value,
                        apply_method="pending-reboot" if key in STATIC_PARAMETERS else "immediate",
                    )
                    for key, value in parameters(s, args.budget).items()
                ],
                tags=args.tags,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    aliases=[pulumi.Alias(name=f"{name}-params")] if fam == running else None,
                ),
            )
            for fam in lifecycle.parameter_group_families
        }
        self.parameter_group = self.parameter_groups[db.parameter_group_family]
        final_snapshot: pulumi.Output[str] | None = None
        if s.is_prod:
            # Generated once per instance (kept in state), so a later stack's teardown differs.
            suffix = random.RandomId(
                f"{name}-final-snapshot", byte_length=SNAPSHOT_SUFFIX_BYTES, opts=child
            )
            final_snapshot = suffix.hex.apply(lambda h: f"slotguard-{s.stack}-final-{h}")
        self.instance = aws.rds.Instance(
            f"{name}-instance",
            engine="postgres",
            # A major version only: the provider keeps the configured prefix while RDS moves the
            # minor (`engine_version_actual`), so an automatic minor upgrade is never undone.
            engine_version=db.engine_version,
            instance_class=db.instance_class,
            allocated_storage=db.allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            db_name=db.name,
            port=db.port,
            username=MASTER_USERNAME,
            manage_master_user_password=True,
            iam_database_authentication_enabled=False,
            publicly_accessible=False,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[args.security_group_id],
            parameter_group_name=self.parameter_group.name,
            ca_cert_identifier=CA_CERT_IDENTIFIER,
            multi_az=s.multi_az,
            backup_retention_period=s.backup_retention_days,
            deletion_protection=s.deletion_protection,
            skip_final_snapshot=not s.is_prod,
            final_snapshot_identifier=final_snapshot,
            enabled_cloudwatch_logs_exports=list(PROD_LOG_EXPORTS) if s.is_prod else None,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            # RDS refuses a new major without it (provider docs: "When upgrading the major
            # version of an engine, `allow_major_version_upgrade` must be set to `true`"); set
            # only while the plan upgrades, so a mistyped major is never applied silently.
            allow_major_version_upgrade=lifecycle.allow_major_version_upgrade or None,
            apply_immediately=lifecycle.apply_immediately,
            blue_green_update=aws.rds.InstanceBlueGreenUpdateArgs(enabled=True)
            if lifecycle.blue_green_update
            else None,
            tags=args.tags,
            # The engine refuses to replace or delete a protected resource, at preview too
            # (pulumi/pulumi#8810, #15969); prod on by default (database.protect).
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=s.protect_database,
                # What RDS already holds pending for the maintenance window is not re-sent.
                ignore_changes=list(lifecycle.pending_ignores) or None,
            ),
        )
        self.address = self.instance.address
        self.port = self.instance.port
        self.identifier = self.instance.identifier
        self.arn = self.instance.arn
        self.resource_id = self.instance.resource_id
        self.master_secret_arn = self.instance.master_user_secrets.apply(_master_secret_arn)
        self.reader_address: pulumi.Output[str] | None = None
        self.instance_identifiers: dict[str, pulumi.Output[str]] = {"writer": self.identifier}
        self.register_outputs(
            {
                "address": self.address,
                "identifier": self.identifier,
                "master_secret_arn": self.master_secret_arn,
            }
        )

    @property
    def ready(self) -> list[pulumi.Resource]:
        """What the bootstrap waits for."""
        return [self.instance]


def _master_secret_arn(secrets: Sequence[aws.rds.outputs.InstanceMasterUserSecret]) -> str:
    if not secrets or not secrets[0].secret_arn:
        # Only in a preview before the instance exists; a deployment always has the secret.
        return ""
    return secrets[0].secret_arn
