"""Rules on the database kinds beyond one RDS instance: Aurora, and a database the team owns.

An Aurora cluster keeps the instance's promises (private, encrypted, TLS forced, protected in
production) spread over three resources: the cluster (encryption, backups, deletion
protection), its instances (public access) and its cluster parameter group (`rds.force_ssl`).
A stack around an existing database must own nothing that could modify, replace or delete it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from pydantic import Field

from policy.base import Finding, RuleConfig
from policy.stackview import (
    EXISTING_DATABASE,
    RDS_CLUSTER,
    RDS_CLUSTER_INSTANCE,
    RDS_CLUSTER_PARAMETER_GROUP,
    RDS_INSTANCE,
    RDS_PARAMETER_GROUP,
    StackView,
    as_int,
    label,
)

# Every RDS resource type that creates, changes or deletes a database or what it runs with.
DATABASE_MANAGING_TYPES = (
    RDS_INSTANCE,
    RDS_CLUSTER,
    RDS_CLUSTER_INSTANCE,
    RDS_PARAMETER_GROUP,
    RDS_CLUSTER_PARAMETER_GROUP,
    "aws:rds/subnetGroup:SubnetGroup",
    "aws:rds/optionGroup:OptionGroup",
    "aws:rds/clusterEndpoint:ClusterEndpoint",
    "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication",
    "aws:rds/snapshot:Snapshot",
    "aws:rds/clusterSnapshot:ClusterSnapshot",
)


class ExistingDatabaseConfig(RuleConfig):
    pass


def check_existing_untouched(view: StackView, config: ExistingDatabaseConfig) -> Iterator[Finding]:
    """With an existing database, no RDS resource of the stack may manage a database."""
    del config
    if not view.of_type(EXISTING_DATABASE):
        return
    for resource in view.of_type(*DATABASE_MANAGING_TYPES):
        yield Finding(
            f"{label(resource)} is an RDS resource in a stack around an existing database: the "
            "stack must never modify, replace or delete the team's database; remove it (look "
            "the database up instead).",
            resource.urn,
        )


class AuroraConfig(RuleConfig):
    min_backup_retention_days: int = Field(
        7,
        ge=1,
        le=35,
        alias="minBackupRetentionDays",
        description="Fewest days of automated backups a production cluster may keep.",
    )
    prod_stack_pattern: str = Field(
        r"^prod",
        alias="prodStackPattern",
        description="Stacks whose name matches are production, besides the environment tag.",
    )


def _is_prod(view: StackView, cluster_tags: object, config: AuroraConfig) -> bool:
    if isinstance(cluster_tags, Mapping) and cluster_tags.get("slotguard:environment") == "prod":
        return True
    return bool(view.stack) and re.search(config.prod_stack_pattern, view.stack) is not None


def check_aurora(view: StackView, config: AuroraConfig) -> Iterator[Finding]:
    """Aurora clusters: private, encrypted, TLS forced; production clusters protected."""
    groups = view.of_type(RDS_CLUSTER_PARAMETER_GROUP)
    for cluster in view.of_type(RDS_CLUSTER):
        if cluster.props.get("storageEncrypted") is not True:
            yield Finding(
                f"Aurora cluster {label(cluster)} is not encrypted at rest: set "
                "storage_encrypted=True.",
                cluster.urn,
            )
        found = view.refers_to(cluster, "dbClusterParameterGroupName", groups)
        group = found[0] if found else (groups[0] if len(groups) == 1 else None)
        force = view.parameters(group).get("rds.force_ssl") if group is not None else None
        if force != "1":
            yield Finding(
                f"Aurora cluster {label(cluster)} does not force TLS (its cluster parameter "
                f"group has rds.force_ssl={force or 'unset'}): set rds.force_ssl to 1.",
                (group or cluster).urn,
            )
        if _is_prod(view, cluster.props.get("tags"), config):
            if cluster.props.get("deletionProtection") is not True:
                yield Finding(
                    f"production Aurora cluster {label(cluster)} has no deletion protection: "
                    "set deletion_protection=True.",
                    cluster.urn,
                )
            days = as_int(cluster.props.get("backupRetentionPeriod")) or 0
            if days < config.min_backup_retention_days:
                yield Finding(
                    f"production Aurora cluster {label(cluster)} keeps {days} days of backups, "
                    f"fewer than {config.min_backup_retention_days}.",
                    cluster.urn,
                )
            if cluster.props.get("skipFinalSnapshot") is True:
                yield Finding(
                    f"production Aurora cluster {label(cluster)} skips its final snapshot.",
                    cluster.urn,
                )
    for instance in view.of_type(RDS_CLUSTER_INSTANCE):
        if instance.props.get("publiclyAccessible") is True:
            yield Finding(
                f"Aurora instance {label(instance)} is publicly accessible: set "
                "publicly_accessible=False.",
                instance.urn,
            )
