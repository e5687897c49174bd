"""A database the team already owns: looked up, never managed.

The stack declares no RDS instance, cluster or parameter group of its own (a policy rule holds
it to that), so nothing in it can modify, replace or delete the database. It looks the database
up at preview (endpoint, port, engine and version, parameter group, members) and refuses what
does not fit the settings; the only change outside the stack is the named ingress rule on the
database's security group (infra/network.py), which `pulumi destroy` removes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.budget import Budget
from infra.settings import SettingsError, StackSettings

# The engines the kit runs on: RDS for PostgreSQL (an instance) or Aurora PostgreSQL (a cluster).
INSTANCE_ENGINE = "postgres"
CLUSTER_ENGINE = "aurora-postgresql"


@dataclass(frozen=True)
class ExistingFacts:
    """What the look-up found about the database."""

    identifier: str
    engine: str
    engine_version: str
    address: str
    port: int
    parameter_group: str
    resource_id: str
    arn: str
    security_group_ids: tuple[str, ...]
    reader_address: str | None = None
    # Instance identifiers (the instance itself, or the cluster's members).
    members: tuple[str, ...] = field(default_factory=tuple)


def problems(settings: StackSettings, facts: ExistingFacts) -> list[str]:
    """Everything about the found database that does not fit the settings, each with its fix."""
    db, ex = settings.database, settings.database.existing
    what = f"{'cluster' if ex.is_cluster else 'instance'} {ex.identifier}"
    found: list[str] = []
    wanted_engine = CLUSTER_ENGINE if ex.is_cluster else INSTANCE_ENGINE
    if facts.engine != wanted_engine:
        found.append(
            f"database.existing: {what} runs engine {facts.engine!r}; the kit needs "
            f"{wanted_engine!r}"
        )
    major = facts.engine_version.split(".", 1)[0]
    if major != db.engine_version:
        found.append(
            f"database.engine_version: {what} runs PostgreSQL {facts.engine_version}; set "
            f'engine_version to "{major}" (the bootstrap and the pooler are built for it)'
        )
    if facts.port != db.port:
        found.append(
            f"database.port: {what} listens on {facts.port}, the settings say {db.port}; set "
            f"database.port to {facts.port}"
        )
    if ex.security_group_id not in facts.security_group_ids:
        found.append(
            f"database.existing.security_group_id: {ex.security_group_id} is not one of "
            f"{what}'s security groups ({', '.join(facts.security_group_ids) or 'none'}); the "
            "pooler's ingress rule would admit nothing"
        )
    return found


def look_up(settings: StackSettings, parent: pulumi.Resource | None = None) -> ExistingFacts:
    """The provider's look-up of the instance or cluster (runs at preview as at update)."""
    ex = settings.database.existing
    opts = pulumi.InvokeOptions(parent=parent)
    try:
        if ex.is_cluster:
            c = aws.rds.get_cluster(cluster_identifier=ex.identifier, opts=opts)
            return ExistingFacts(
                identifier=ex.identifier,
                engine=str(c.engine),
                engine_version=str(c.engine_version),
                address=str(c.endpoint),
                port=int(c.port),
                parameter_group=str(c.db_cluster_parameter_group_name),
                resource_id=str(c.cluster_resource_id),
                arn=str(c.arn),
                security_group_ids=tuple(c.vpc_security_group_ids or ()),
                reader_address=str(c.reader_endpoint) if c.reader_endpoint else None,
                members=tuple(sorted(c.cluster_members or ())),
            )
        i = aws.rds.get_instance(db_instance_identifier=ex.identifier, opts=opts)
        return ExistingFacts(
            identifier=ex.identifier,
            engine=str(i.engine),
            engine_version=str(i.engine_version),
            address=str(i.address),
            port=int(i.port),
            parameter_group=next(iter(i.db_parameter_groups or ()), ""),
            resource_id=str(i.resource_id),
            arn=str(i.db_instance_arn),
            security_group_ids=tuple(i.vpc_security_groups or ()),
            members=(ex.identifier,),
        )
    except SettingsError:
        raise
    except Exception as error:  # the provider reports "not found" as an invoke error
        kind = "cluster_identifier" if ex.is_cluster else "instance_identifier"
        raise SettingsError(
            [
                f"database.existing.{kind}: cannot look up {ex.identifier!r} in "
                f"{settings.region or 'the stack region'}: {error}"
            ]
        ) from None


class ExistingDatabase(pulumi.ComponentResource):
    """The found database's endpoint and identity; no resource of its own."""

    facts: ExistingFacts
    address: pulumi.Output[str]
    reader_address: pulumi.Output[str] | None
    port: pulumi.Output[int]
    identifier: pulumi.Output[str]
    arn: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    resource_id: pulumi.Output[str]
    instance_identifiers: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slotguard:database:ExistingDatabase", name, None, opts)
        facts = look_up(settings, parent=self)
        found = problems(settings, facts)
        if found:
            raise SettingsError(found)
        ex = settings.database.existing
        self.facts = facts
        self.address = pulumi.Output.from_input(facts.address)
        self.reader_address = (
            pulumi.Output.from_input(facts.reader_address) if facts.reader_address else None
        )
        self.port = pulumi.Output.from_input(facts.port)
        self.identifier = pulumi.Output.from_input(facts.identifier)
        self.arn = pulumi.Output.from_input(facts.arn)
        self.master_secret_arn = pulumi.Output.from_input(ex.master_secret_arn or "")
        self.resource_id = pulumi.Output.from_input(facts.resource_id)
        self.instance_identifiers = {
            ("writer" if member == facts.identifier else member): pulumi.Output.from_input(member)
            for member in facts.members
        }
        self.register_outputs({"address": self.address, "identifier": self.identifier})

    @property
    def ready(self) -> list[pulumi.Resource]:
        return []


def verify_max_connections(settings: StackSettings, budget: Budget) -> None:
    """At preview, read the database's max_connections and refuse a budget it cannot give.

    boto3 is imported lazily: an offline run never calls this (the mocks know no parameters).
    A look-up that fails is a warning, not a refusal: the deploying identity may lack
    rds:DescribeDBParameters, and `slotguard verify` checks the live value after the deploy.
    """
    import boto3  # noqa: PLC0415
    import botocore.exceptions  # noqa: PLC0415

    from infra.existing_lookup import (  # noqa: PLC0415
        cluster_members,
        live_max_connections,
        refusal,
    )

    ex = settings.database.existing
    try:
        rds = boto3.client("rds", region_name=settings.region)
        instances = cluster_members(rds, ex.identifier) if ex.is_cluster else [ex.identifier]
        live = live_max_connections(rds, instances)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        pulumi.log.warn(f"cannot read {ex.identifier}'s max_connections: {error}")
        return
    problem = refusal(budget.max_connections, live)
    if problem is None:
        return
    if live.value is None:
        pulumi.log.warn(problem)
        return
    raise SettingsError([problem])
