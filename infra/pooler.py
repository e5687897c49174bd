"""The pooler in front of the database: one switch, `pooler.kind`, picks the implementation.

Both implementations expose the same attributes (`endpoint`, `port`, `auth_resource`,
`client_sslrootcert`, `client_ca_layer_arn`, `dimensions`), so the functions and alarms do not
care which one runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi

from infra.budget import Budget
from infra.pooler_pgbouncer import ImageSource, PgBouncerArgs, PgBouncerPooler
from infra.pooler_rds_proxy import RdsProxyArgs, RdsProxyPooler
from infra.settings import StackSettings

Pooler = PgBouncerPooler | RdsProxyPooler


@dataclass
class PoolerArgs:
    settings: StackSettings
    budget: Budget
    image: ImageSource
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    pooler_sg_id: pulumi.Input[str]
    lb_sg_id: pulumi.Input[str] | None
    database_address: pulumi.Input[str]
    database_port: pulumi.Input[int]
    database_identifier: pulumi.Input[str]
    app_user_secret_arn: pulumi.Input[str]
    tags: dict[str, str]
    # app_user's SCRAM verifier in a secret of its own (the PgBouncer tasks read only this).
    app_user_verifier_secret_arn: pulumi.Input[str] | None = None
    app_user_verifier_version_id: pulumi.Input[str] | None = None
    # The alternating-users clone's verifier (PgBouncer) and the standby login's secret (RDS
    # Proxy): both logins work through the pooler at all times.
    app_user_clone_verifier_secret_arn: pulumi.Input[str] | None = None
    app_user_clone_verifier_version_id: pulumi.Input[str] | None = None
    app_user_standby_secret_arn: pulumi.Input[str] | None = None
    function_runtimes: Sequence[str] = field(default_factory=tuple)
    function_architectures: Sequence[str] = field(default_factory=tuple)
    # Per workload: its role's secret (RDS Proxy), its verifier secret and version by role
    # (PgBouncer). Empty without workloads.
    workload_secret_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    workload_verifiers: Mapping[str, tuple[pulumi.Input[str], pulumi.Input[str]]] = field(
        default_factory=dict
    )
    # Aurora with readers: the reader endpoint (the read pool's or proxy endpoint's target).
    reader_address: pulumi.Input[str] | None = None
    # An Aurora cluster (RDS Proxy targets a cluster by its cluster identifier).
    database_is_cluster: bool = False


def create_pooler(
    name: str, args: PoolerArgs, opts: pulumi.ResourceOptions | None = None
) -> Pooler:
    """The pooler of `settings.pooler.kind`."""
    if args.settings.pooler.kind == "pgbouncer":
        if args.lb_sg_id is None:
            raise ValueError("a PgBouncer pooler needs the NLB's security group")
        if args.app_user_verifier_secret_arn is None or args.app_user_verifier_version_id is None:
            raise ValueError("a PgBouncer pooler needs app_user's verifier secret and version")
        return PgBouncerPooler(
            name,
            PgBouncerArgs(
                settings=args.settings,
                budget=args.budget,
                image=args.image,
                vpc_id=args.vpc_id,
                subnet_ids=args.subnet_ids,
                task_sg_id=args.pooler_sg_id,
                lb_sg_id=args.lb_sg_id,
                database_address=args.database_address,
                database_port=args.database_port,
                app_user_verifier_secret_arn=args.app_user_verifier_secret_arn,
                app_user_verifier_version_id=args.app_user_verifier_version_id,
                workload_verifiers=args.workload_verifiers,
                app_user_clone_verifier_secret_arn=args.app_user_clone_verifier_secret_arn,
                app_user_clone_verifier_version_id=args.app_user_clone_verifier_version_id,
                tags=args.tags,
                function_runtimes=args.function_runtimes,
                function_architectures=args.function_architectures,
                reader_address=args.reader_address,
            ),
            opts,
        )
    return RdsProxyPooler(
        name,
        RdsProxyArgs(
            settings=args.settings,
            budget=args.budget,
            subnet_ids=args.subnet_ids,
            security_group_id=args.pooler_sg_id,
            database_identifier=args.database_identifier,
            app_user_secret_arn=args.app_user_secret_arn,
            workload_secret_arns=args.workload_secret_arns,
            app_user_standby_secret_arn=args.app_user_standby_secret_arn,
            tags=args.tags,
            database_is_cluster=args.database_is_cluster,
            read_only_endpoint=args.reader_address is not None,
        ),
        opts,
    )
