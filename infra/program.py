"""The whole stack: the components composed in dependency order, and the stack outputs.

`build_stack` takes already-validated settings and budget, plus the artifacts (function code and
the pooler image), so the same program runs under `pulumi up` and offline under mocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pulumi

from infra.account import check_account
from infra.alarms import Alarms, AlarmsArgs
from infra.app_user import AppUser, AppUserArgs
from infra.budget import Budget
from infra.database import Database, DatabaseArgs, parameters
from infra.database_aurora import AuroraArgs, AuroraDatabase
from infra.database_existing import ExistingDatabase
from infra.deployed import PendingReader, deployed_database
from infra.ecr_image import check_platform, image_platforms, image_reference
from infra.functions import CodeSource, FunctionCode, Functions, FunctionsArgs
from infra.lifecycle import LifecyclePlan, plan_lines
from infra.lifecycle import plan as lifecycle_plan
from infra.network import Network, NetworkArgs
from infra.pooler import Pooler, PoolerArgs, create_pooler
from infra.pooler_pgbouncer import DockerBuild, ImageSource, PgBouncerPooler, PrebuiltImage
from infra.reboot import ParameterRebootArgs, parameter_reboot
from infra.settings import SettingsError, StackSettings


@dataclass(frozen=True)
class Artifacts:
    """What the program deploys but does not build itself."""

    code: CodeSource  # (runtime, architecture) -> the packaged `functions` artifact
    image: ImageSource = field(default_factory=DockerBuild)


@dataclass
class Stack:
    """The components of one stack, for tests and for exporting outputs."""

    network: Network
    database: Database | AuroraDatabase | ExistingDatabase
    app_user: AppUser
    pooler: Pooler
    functions: Functions
    alarms: Alarms
    outputs: dict[str, pulumi.Input[object]]


# The stack's name is part of AWS names (RDS Proxy, ECR, Lambda, ECS), the strictest of which
# take lower-case letters, digits and single hyphens only.
STACK_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?!-))*(?<!-)")
MAX_STACK_NAME = 30


def check_stack_name(stack: str) -> None:
    if not STACK_NAME.fullmatch(stack) or len(stack) > MAX_STACK_NAME:
        raise SettingsError(
            [
                f"stack: {stack!r} becomes part of AWS resource names; use at most "
                f"{MAX_STACK_NAME} lower-case letters, digits and single hyphens, starting with "
                "a letter (pulumi stack rename)"
            ]
        )


def build_stack(
    settings: StackSettings,
    budget: Budget,
    artifacts: Artifacts,
    read_pending: PendingReader | None = None,
) -> Stack:
    """Declare every resource of the stack; returns the components and the stack outputs.

    `read_pending` reads the running instance's pending modifications (boto3 under `pulumi up`,
    the offline account under mocks); None reads none.
    """
    check_stack_name(settings.stack)
    # Look-ups against the account (they run at `pulumi preview` too): its Lambda quota and the
    # engine versions RDS offers, refused here before anything is declared.
    check_account(settings, budget)
    lifecycle = plan_lifecycle(settings, read_pending)
    tags = settings.all_tags
    name = f"slotguard-{settings.stack}"
    network = Network(
        name,
        NetworkArgs(
            settings=settings.network,
            database_port=settings.database.port,
            pooler_port=budget.pooler_port,
            pooler_kind=settings.pooler.kind,
            tags=tags,
            database_sg_id=settings.database.existing.security_group_id
            if settings.database.kind == "existing"
            else None,
            extra_secrets=master_secret_patterns(settings),
        ),
    )
    database = create_database(name, settings, budget, network, tags, lifecycle=lifecycle)
    app_user = AppUser(
        name,
        AppUserArgs(
            settings=settings,
            budget=budget,
            code=artifacts.code,
            database_address=database.address,
            database_port=database.port,
            master_secret_arn=database.master_secret_arn,
            database_resource_id=database.resource_id,
            subnet_ids=network.subnet_ids,
            bootstrap_sg_id=network.bootstrap_sg_id,
            tags=tags,
            # The bootstrap reaches Secrets Manager through the endpoints and the database
            # through the security-group rules: both in place before it runs.
            depends_on=[*database.ready, *network.ready],
        ),
    )
    if settings.reboot_for_parameters and isinstance(database, Database):
        # After the first bootstrap run (which already lowered app_user's limit on a decrease):
        # reboot when max_connections waits for it, then let the bootstrap raise the limit.
        parameter_reboot(
            name,
            ParameterRebootArgs(
                identifier=database.identifier,
                parameters=parameters(settings, budget),
                region=settings.region or "",  # empty: boto3's own region setting
                bootstrap_function=app_user.bootstrap.function.name,
                bootstrap_event=budget.bootstrap_event(settings.database.name),
                depends_on=[app_user.invocation, database.parameter_group, database.instance],
            ),
            opts=pulumi.ResourceOptions(parent=database),
        )
    pooler = create_pooler(
        name,
        PoolerArgs(
            settings=settings,
            budget=budget,
            image=artifacts.image,
            vpc_id=network.vpc_id,
            subnet_ids=network.subnet_ids,
            pooler_sg_id=network.pooler_sg_id,
            lb_sg_id=network.pooler_lb_sg_id,
            database_address=database.address,
            database_port=database.port,
            database_identifier=database.identifier,
            app_user_secret_arn=app_user.secret_arn,
            app_user_verifier_secret_arn=app_user.verifier_secret_arn,
            app_user_verifier_version_id=app_user.verifier_version_id,
            workload_secret_arns=app_user.workload_secret_arns,
            workload_verifiers=app_user.workload_verifiers,
            app_user_clone_verifier_secret_arn=app_user.clone_verifier_secret_arn,
            app_user_clone_verifier_version_id=app_user.clone_verifier_version_id,
            app_user_standby_secret_arn=app_user.standby_secret_arn,
            tags=tags,
            function_runtimes=[f.runtime for f in settings.functions.values()],
            function_architectures=[f.architecture for f in settings.functions.values()],
            reader_address=database.reader_address if budget.read_pool is not None else None,
            database_is_cluster=settings.database.kind == "aurora"
            or (settings.database.kind == "existing" and settings.database.existing.is_cluster),
        ),
    )
    functions = Functions(
        name,
        FunctionsArgs(
            settings=settings,
            budget=budget,
            code=artifacts.code,
            pooler_host=pooler.endpoint,
            pooler_auth_resource=pooler.auth_resource,
            app_user_secret_arn=app_user.secret_arn,
            workload_secret_arns=app_user.workload_secret_arns,
            subnet_ids=network.subnet_ids,
            security_group_id=network.functions_sg_id,
            tags=tags,
            sslrootcert=pooler.client_sslrootcert,
            layers=[pooler.client_ca_layer_arn] if pooler.client_ca_layer_arn is not None else [],
            pooler_read_host=pooler.read_endpoint,
            depends_on=[app_user.invocation, *network.ready],
        ),
    )
    alarms = Alarms(
        name,
        AlarmsArgs(
            settings=settings,
            budget=budget,
            database_identifier=database.identifier,
            pooler_kind=settings.pooler.kind,
            pooler_dimensions=pooler.dimensions,
            pooler_health_dimensions=pooler.health_dimensions,
            function_names={k: f.function.name for k, f in functions.functions.items()},
            tags=tags,
            instance_identifiers=database.instance_identifiers
            if settings.database.kind != "rds-instance"
            else {},
            cluster_identifier=database.identifier
            if settings.database.kind == "aurora" or settings.database.existing.is_cluster
            else None,
        ),
    )
    outputs: dict[str, pulumi.Input[object]] = {
        "pooler_kind": settings.pooler.kind,
        "pooler_endpoint": pooler.endpoint,
        "pooler_port": pooler.port,
        "api_url": next(iter(functions.urls.values()), None)
        if "api" not in functions.urls
        else functions.urls["api"],
        "function_urls": functions.urls,
        "function_names": {k: f.function.name for k, f in functions.functions.items()},
        "dashboard_url": alarms.dashboard_url,
        "alarm_topic_arn": alarms.topic_arn,
        "app_user_secret_arn": app_user.secret_arn,
        "migrator_secret_arn": app_user.migrator_secret_arn,
        "master_secret_arn": database.master_secret_arn,
        "max_connections": budget.max_connections,
        "pooler_ceiling": budget.pooler_ceiling,
        # max_connections changes wait for a reboot; until then the bootstrap holds app_user's
        # limit within the running server's. After the reboot, invoke the bootstrap function
        # with this event again to raise it (README, "Changing max_connections").
        "bootstrap_function": app_user.bootstrap.function.name,
        "bootstrap_event": json.dumps(budget.bootstrap_event(settings.database.name)),
        "app_user_connection_limit": app_user.invocation.result.apply(_applied_limit),
    }
    outputs.update(verify_outputs(database, app_user, pooler, alarms))
    outputs["database_lifecycle"] = lifecycle_output(lifecycle)
    if settings.database.kind != "rds-instance":
        # What `slotguard verify` needs besides: the kind, and every instance's identifier.
        outputs["database_kind"] = settings.database.kind
        outputs["database_is_cluster"] = settings.database.kind == "aurora" or (
            settings.database.existing.is_cluster
        )
        outputs["database_instance_identifiers"] = database.instance_identifiers
    return Stack(network, database, app_user, pooler, functions, alarms, outputs)


def plan_lifecycle(
    settings: StackSettings, read_pending: PendingReader | None = None
) -> LifecyclePlan:
    """The next update's plan against the running instance; refused plans stop the preview.

    The running instance is read from RDS (`infra.deployed`) because a program cannot read its
    own state: a replace-forcing change or a major change is known before anything is created.
    """
    current = deployed_database(settings, read_pending=read_pending)
    plan = lifecycle_plan(settings, current)
    for line in plan_lines(plan):
        pulumi.log.info(line)
    if plan.refused:
        raise SettingsError(list(plan.refusals))
    return plan


def lifecycle_output(plan: LifecyclePlan) -> dict[str, object]:
    """What the update did to the database's life: path, families, pending (for `verify`)."""
    return {
        "path": plan.path,
        "upgrade_path": plan.upgrade_path,
        "major_from": plan.major_from,
        "major_to": plan.major_to,
        "parameter_group_families": list(plan.parameter_group_families),
        "protected": plan.protected,
    }


def master_secret_patterns(settings: StackSettings) -> tuple[str, ...]:
    """The master secret the bootstrap reads, where `rds!db-*` does not name it.

    RDS names the master secret it manages for an instance `rds!db-<id>`; the cluster's is taken
    as `rds!cluster-<id>` (the same scheme; not stated on the RDS user guide page
    "Password management with Amazon RDS and AWS Secrets Manager", so verify it on a first
    deploy: the bootstrap fails naming the secret if the endpoint policy refuses it).
    """
    db = settings.database
    if db.kind == "aurora":
        return ("rds!cluster-*",)
    if db.kind == "existing" and db.existing.master_secret_arn:
        return (db.existing.master_secret_arn,)
    return ()


def create_database(
    name: str,
    settings: StackSettings,
    budget: Budget,
    network: Network,
    tags: dict[str, str],
    *,
    lifecycle: LifecyclePlan,
) -> Database | AuroraDatabase | ExistingDatabase:
    """The database of `database.kind`: a new instance (default), a new cluster, or the team's."""
    kind = settings.database.kind
    if kind == "existing":
        return ExistingDatabase(name, settings)
    if kind == "aurora":
        return AuroraDatabase(
            name,
            AuroraArgs(
                settings=settings,
                budget=budget,
                subnet_ids=network.subnet_ids,
                security_group_id=network.database_sg_id,
                tags=tags,
            ),
        )
    return Database(
        name,
        DatabaseArgs(
            settings=settings,
            budget=budget,
            subnet_ids=network.subnet_ids,
            security_group_id=network.database_sg_id,
            tags=tags,
            lifecycle=lifecycle,
        ),
    )


def verify_outputs(
    database: Database | AuroraDatabase | ExistingDatabase,
    app_user: AppUser,
    pooler: Pooler,
    alarms: Alarms,
) -> dict[str, pulumi.Input[object]]:
    """The names `slotguard verify` looks up after `pulumi up` (added, never renamed)."""
    outputs: dict[str, pulumi.Input[object]] = {
        "database_identifier": database.identifier,
        "bootstrap_function_name": app_user.bootstrap.function.name,
        "alarm_names": [alarm.name for alarm in alarms.alarms.values()],
    }
    if isinstance(pooler, PgBouncerPooler):
        outputs["ecs_cluster_name"] = pooler.cluster_name
        outputs["ecs_service_name"] = pooler.ecs_service_name
        outputs["target_group_arn"] = pooler.target_group_arn
        outputs["pooler_certificate_not_after"] = pooler.certificate_not_after
    else:
        outputs["proxy_name"] = pooler.proxy_name
    return outputs


def _applied_limit(result: str | None) -> int | None:
    """The CONNECTION LIMIT the bootstrap set (its report), or None before it ran."""
    try:
        report = json.loads(result or "{}")
    except json.JSONDecodeError:
        return None
    limit = report.get("connection_limit") if isinstance(report, dict) else None
    return int(limit) if isinstance(limit, int) else None


def export(stack: Stack) -> None:
    for key, value in stack.outputs.items():
        pulumi.export(key, value)


def image_source(
    settings: StackSettings, *, image: str | None = None, public_route: bool = False
) -> ImageSource:
    """The pooler image: one already built (`pgbouncer:image`), or built from `pgbouncer/`.

    A prebuilt image must be in ECR unless the tasks can reach another registry, which only an
    existing VPC's subnets can (a new VPC has private subnets and endpoints only).
    """
    if image:
        if public_route and settings.network.mode != "existing":
            raise SettingsError(
                [
                    "pgbouncer:publicRegistryRoute: a new VPC has no route to a public registry "
                    "(private subnets and VPC endpoints only); push the image to ECR"
                ]
            )
        image_reference(image, public_route=public_route)
        return PrebuiltImage(image, public_route=public_route)
    return DockerBuild()


def verify_image_platform(source: ImageSource) -> None:
    """At preview, ask ECR whether a prebuilt image offers linux/arm64; warn if it cannot tell.

    Imported lazily: an offline run never calls it and needs no boto3 session.
    """
    if not isinstance(source, PrebuiltImage):
        return
    reference = image_reference(source.uri, public_route=source.public_route)
    if reference is None:
        pulumi.log.warn(
            f"pgbouncer:image {source.uri} is not in ECR: check yourself that it is linux/arm64"
        )
        return
    import boto3  # noqa: PLC0415
    import botocore.exceptions  # noqa: PLC0415

    try:
        platforms = image_platforms(reference, boto3.client("ecr", region_name=reference.region))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as error:
        pulumi.log.warn(f"cannot read the platform of pgbouncer:image {source.uri}: {error}")
        return
    check_platform(source.uri, platforms)


def packaged_code(runtime: str, architecture: str) -> FunctionCode:
    """The packaging builder's zip for a (runtime, architecture) pair, built at deploy time.

    Imported here rather than at the top: an offline run injects stand-in code and never
    packages anything.
    """
    from infra.packaging import build_package  # noqa: PLC0415

    artifact = build_package(runtime=runtime, architecture=architecture)
    return FunctionCode(
        archive=pulumi.FileArchive(str(artifact.path)), sha256_b64=artifact.sha256_b64
    )
