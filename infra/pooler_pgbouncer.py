"""PgBouncer on ECS Fargate behind an internal NLB, configured entirely from the budget.

The task's environment is exactly what `pgbouncer.environment` reads: every pool number comes
from `budget.pgbouncer`, secrets (the role's SCRAM verifier, the stats password, the client TLS
key) are injected by ECS from Secrets Manager, never written into the task definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

from infra.app_user import VERIFIER_KEY
from infra.aws_constraints import fargate_pair_problem
from infra.budget import NLB_HEALTH_INTERVAL_S, NLB_HEALTHY_THRESHOLD, Budget, PgBouncerBudget
from infra.budget_cluster import pgbouncer_fields
from infra.ecr_image import image_reference
from infra.functions import LOG_RETENTION_DAYS, assume_role_policy, role_name_prefix
from infra.rotation import CLONE_SUFFIX
from infra.settings import SettingsError, StackSettings
from pgbouncer import environment as task_env
from pgbouncer import metrics

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "pgbouncer"
# Where the functions find the pooler's CA: a Lambda layer unpacks under /opt.
CLIENT_CA_LAYER_PATH = "certs/pooler-ca.pem"
CLIENT_CA_PATH = f"/opt/{CLIENT_CA_LAYER_PATH}"
# NLB health check: a TCP connect to the listener every 10 s, two results to change state.
HEALTH_INTERVAL_S = NLB_HEALTH_INTERVAL_S
HEALTH_THRESHOLD = NLB_HEALTHY_THRESHOLD
# A new task is given this long to pass the NLB health check before ECS counts its failures.
HEALTH_GRACE_S = 30
# The pooler's certificates: a private CA only the stack's functions trust.
CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 2 * 365 * 24
CERT_EARLY_RENEWAL_HOURS = 30 * 24
LB_NAME_PREFIX = "sgpgb-"
# RFC 5280 appendix A: ub-common-name INTEGER ::= 64.
MAX_COMMON_NAME = 64
# A prod pooler survives one task or AZ failing.
PROD_MIN_TASKS = 2
# The stop timeout, the drain and the deregistration delay come from the budget's deploy plan
# (`budget.pgbouncer.deploy`); see `deploy_settings` and `autoscaling`.
# Target tracking: add tasks after a minute above target, remove one after five below it.
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
# Images kept in the repository: the running one and a few to roll back to.
KEEP_IMAGES = 10


@dataclass(frozen=True)
class DockerBuild:
    """Build `pgbouncer/Dockerfile` and push it to the stack's ECR repository.

    The image installs the stack's `pooler.pgbouncer.version` from Debian's signed packages.
    """

    context: Path = ROOT
    dockerfile: Path = ROOT / "pgbouncer" / "Dockerfile"


@dataclass(frozen=True)
class PrebuiltImage:
    """An image already in a registry (CI builds it, or an offline run names a placeholder)."""

    uri: str
    # The tasks' subnets route to a public registry (an existing VPC behind a NAT); otherwise
    # only ECR images can be pulled.
    public_route: bool = False


ImageSource = DockerBuild | PrebuiltImage


def secret_reference(
    secret_arn: pulumi.Input[str], key: str, version_id: pulumi.Input[str]
) -> pulumi.Output[str]:
    """ECS `valueFrom` for one JSON key of one version of a secret: `arn:key::version-id`.

    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html
    (`arn:...:secret:name:json-key:version-stage:version-id`).
    """
    return pulumi.Output.concat(secret_arn, ":", key, "::", version_id)


def certificate_common_name(stack: str) -> str:
    """The pooler certificate's CN: a label within RFC 5280's 64 characters, never the NLB name."""
    return f"slotguard {stack} pooler"[:MAX_COMMON_NAME]


def source_tag(directory: Path = ROOT / "pgbouncer") -> str:
    """A content tag of the image sources, so an unchanged pooler is never redeployed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def workload_pool_environment(budget: Budget) -> dict[str, str]:
    """The workloads' pools for the task: app_user's share and a `[users]` pool per role.

    Nothing without workloads, so such a stack's task definition stays as it was.
    """
    pools = [w for w in budget.workloads.values() if w.pool_size is not None]
    if not pools or budget.default_pool_size is None:
        return {}
    return {
        f"{task_env.PREFIX}DEFAULT_POOL_SIZE": str(budget.default_pool_size),
        task_env.USER_POOLS_VARIABLE: json.dumps(
            [
                {
                    "user": w.role,
                    "pool_size": w.pool_size,
                    "max_user_connections": w.max_user_connections,
                    "idle_transaction_timeout_s": w.idle_transaction_timeout_s,
                }
                for w in pools
            ]
        ),
    }


def task_environment(
    settings: StackSettings,
    pb: PgBouncerBudget,
    *,
    database_address: pulumi.Input[str],
    database_port: pulumi.Input[int],
    region: pulumi.Input[str],
    service_name: str,
    budget: Budget | None = None,
    reader_address: pulumi.Input[str] | None = None,
) -> dict[str, pulumi.Input[str]]:
    """`PGBOUNCER_*` variables (docs/pgbouncer.md): the budget's per-process numbers.

    With an Aurora budget, also the failover settings and the read pool on `reader_address`.
    """
    p = task_env.PREFIX
    cluster: dict[str, pulumi.Input[str]] = {}
    if budget is not None:
        fields = pgbouncer_fields(budget.read_pool, budget.failover)
        if reader_address is None:
            fields = {k: v for k, v in fields.items() if not k.startswith("READ_")}
        cluster = {f"{p}{key}": value for key, value in fields.items()}
        if reader_address is not None and budget.read_pool is not None:
            cluster[f"{p}READ_DB_HOST"] = reader_address
    dimensions = ",".join(
        f"{key}={value}" for key, value in metric_dimensions(settings, service_name).items()
    )
    return {
        f"{p}LISTEN_PORT": str(pb.port),
        f"{p}PROCESSES": str(pb.processes_per_task),
        f"{p}DEFAULT_POOL_SIZE": str(pb.pool_size),
        f"{p}RESERVE_POOL_SIZE": str(pb.reserve_pool),
        f"{p}RESERVE_POOL_TIMEOUT_S": f"{pb.reserve_pool_timeout_s:g}",
        f"{p}MAX_DB_CONNECTIONS": str(pb.max_db_connections),
        f"{p}MAX_CLIENT_CONN": str(pb.max_client_conn),
        f"{p}LISTEN_BACKLOG": str(pb.listen_backlog),
        f"{p}QUERY_WAIT_TIMEOUT_S": str(pb.query_wait_timeout_s),
        f"{p}CLIENT_IDLE_TIMEOUT_S": str(pb.client_idle_timeout_s),
        f"{p}SERVER_IDLE_TIMEOUT_S": str(pb.server_idle_timeout_s),
        f"{p}SERVER_LIFETIME_S": str(pb.server_lifetime_s),
        f"{p}SERVER_CONNECT_TIMEOUT_S": str(pb.server_connect_timeout_s),
        f"{p}IDLE_TRANSACTION_TIMEOUT_S": str(pb.idle_transaction_timeout_s),
        f"{p}TCP_KEEPIDLE_S": str(pb.tcp_keepalive_idle_s),
        f"{p}TCP_KEEPINTVL_S": str(pb.tcp_keepalive_interval_s),
        f"{p}TCP_KEEPCNT": str(pb.tcp_keepalive_count),
        f"{p}MAX_PREPARED_STATEMENTS": str(pb.max_prepared_statements),
        f"{p}DATABASE_SHARE": str(pb.server_connections_per_task),
        f"{p}DB_HOST": database_address,
        f"{p}DB_PORT": pulumi.Output.from_input(database_port).apply(str),
        f"{p}DB_NAME": settings.database.name,
        f"{p}DB_SSLMODE": "verify-full",
        f"{p}DRAIN_TIMEOUT_S": str(pb.deploy.drain_timeout_s),
        f"{p}METRICS": "on",
        f"{p}METRICS_NAMESPACE": metrics.NAMESPACE,
        f"{p}METRICS_DIMENSIONS": dimensions,
        # One datapoint per alarm period at least (CloudWatch aggregates the tasks' points).
        f"{p}METRICS_INTERVAL_S": str(min(settings.alarms.period_s, 60)),
        "AWS_REGION": region,
        **cluster,
    }


def autoscaling(
    name: str,
    pb: PgBouncerBudget,
    cluster_name: pulumi.Input[str],
    service_name: pulumi.Input[str],
    *,
    parent: pulumi.Resource,
) -> aws.appautoscaling.Policy | None:
    """ECS target tracking on CPU between `tasks` and `max_tasks`; none when they are equal."""
    d = pb.deploy
    if not d.scales:
        return None
    child = pulumi.ResourceOptions(parent=parent)
    target = aws.appautoscaling.Target(
        f"{name}-scaling-target",
        service_namespace="ecs",
        scalable_dimension="ecs:service:DesiredCount",
        resource_id=pulumi.Output.concat("service/", cluster_name, "/", service_name),
        min_capacity=d.min_tasks,
        max_capacity=d.max_tasks,
        opts=child,
    )
    return aws.appautoscaling.Policy(
        f"{name}-scaling-cpu",
        policy_type="TargetTrackingScaling",
        service_namespace=target.service_namespace,
        scalable_dimension=target.scalable_dimension,
        resource_id=target.resource_id,
        target_tracking_scaling_policy_configuration=(
            aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                target_value=float(d.cpu_target_percent),
                predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ECSServiceAverageCPUUtilization"
                ),
                scale_out_cooldown=SCALE_OUT_COOLDOWN_S,
                scale_in_cooldown=SCALE_IN_COOLDOWN_S,
            )
        ),
        opts=child,
    )


def shape_problems(settings: StackSettings) -> list[str]:
    """What AWS or the design refuses in the tasks' shape, each naming the setting."""
    pb = settings.pooler.pgbouncer
    problems = [p for p in [fargate_pair_problem(pb.cpu, pb.memory_mb)] if p is not None]
    vcpus = max(1, pb.cpu // 1024)
    if pb.processes_per_task > vcpus:
        problems.append(
            f"pooler.pgbouncer.processes_per_task: {pb.processes_per_task} single-threaded "
            f"PgBouncer processes on {pb.cpu} CPU units ({pb.cpu / 1024:g} vCPU) would share "
            f"{vcpus} vCPU; use at most {vcpus}, or raise pooler.pgbouncer.cpu"
        )
    if settings.is_prod and pb.tasks < PROD_MIN_TASKS:
        problems.append(
            f"pooler.pgbouncer.tasks: a prod stack runs at least {PROD_MIN_TASKS} tasks in "
            f"different AZs (got {pb.tasks}), so one failing task or AZ leaves a pooler"
        )
    return problems


def metric_dimensions(settings: StackSettings, service_name: str) -> dict[str, str]:
    """The exporter's dimensions, which the alarms and the dashboard select on."""
    return {
        metrics.DIMENSION_STACK: settings.stack,
        metrics.DIMENSION_SERVICE: service_name,
        metrics.DIMENSION_DATABASE: settings.database.name,
    }


@dataclass
class PgBouncerArgs:
    settings: StackSettings
    budget: Budget
    image: ImageSource
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    task_sg_id: pulumi.Input[str]
    lb_sg_id: pulumi.Input[str]
    database_address: pulumi.Input[str]
    database_port: pulumi.Input[int]
    # The secret holding app_user's SCRAM verifier alone, and its current version.
    app_user_verifier_secret_arn: pulumi.Input[str]
    app_user_verifier_version_id: pulumi.Input[str]
    tags: dict[str, str]
    # Each workload role's verifier secret and version: its auth-file entry.
    workload_verifiers: Mapping[str, tuple[pulumi.Input[str], pulumi.Input[str]]] = field(
        default_factory=dict
    )
    function_runtimes: Sequence[str] = ()
    function_architectures: Sequence[str] = ()
    # The alternating-users clone's verifier (infra/rotation.py); None: app_user's alone.
    app_user_clone_verifier_secret_arn: pulumi.Input[str] | None = None
    app_user_clone_verifier_version_id: pulumi.Input[str] | None = None
    # Aurora with readers: the reader endpoint behind the read pool.
    reader_address: pulumi.Input[str] | None = None


class PgBouncerPooler(pulumi.ComponentResource):
    """ECR image, ECS service of at least two tasks, internal NLB, TLS certificates."""

    kind = "pgbouncer"
    endpoint: pulumi.Output[str]
    port: int
    auth_resource: pulumi.Output[str] | None = None
    client_ca_layer_arn: pulumi.Output[str] | None
    client_sslrootcert: str
    service_name: str
    dimensions: dict[str, pulumi.Input[str]]
    client_ca_pem: pulumi.Output[str]
    certificate_not_after: pulumi.Output[str]
    # Where the pooler's health is published: ECS Container Insights and the NLB's target group.
    health_dimensions: dict[str, dict[str, pulumi.Input[str]]]

    def __init__(  # noqa: PLR0915 - one resource after another
        self, name: str, args: PgBouncerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:pooler:PgBouncer", name, None, opts)
        s, budget = args.settings, args.budget
        pb = budget.pgbouncer
        if pb is None:
            raise ValueError("the budget has no PgBouncer section for a pgbouncer pooler")
        problems = shape_problems(s)
        if problems:
            raise SettingsError(problems)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        self.port = pb.port
        self.service_name = f"slotguard-{s.stack}-pgbouncer"
        self.dimensions = dict(metric_dimensions(s, self.service_name))
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region

        # -- the image ----------------------------------------------------------------------
        # No fixed physical names here: Pulumi generates them, so a replacement (created before
        # the old one is deleted) never collides with the resource it replaces.
        repository = aws.ecr.Repository(
            f"{name}-repo",
            # Tags name the sources' content; a rebuild of unchanged sources may still differ in
            # bytes, so the tag must be overwritable. Tasks pin the pushed digest, not the tag.
            image_tag_mutability="MUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            force_delete=not s.is_prod,
            tags=tags,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-repo-lifecycle",
            repository=repository.name,
            policy=json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": "keep the last images for rollbacks",
                            "selection": {
                                "tagStatus": "any",
                                "countType": "imageCountMoreThan",
                                "countNumber": KEEP_IMAGES,
                            },
                            "action": {"type": "expire"},
                        }
                    ]
                }
            ),
            opts=child,
        )
        image_uri: pulumi.Output[str]
        # The repository the execution role pulls from: the stack's own, or the prebuilt
        # image's (tasks have no route to a public registry, only ECR's endpoints).
        pull_repository: pulumi.Input[str] = repository.arn
        if isinstance(args.image, PrebuiltImage):
            prebuilt = image_reference(args.image.uri, public_route=args.image.public_route)
            image_uri = pulumi.Output.from_input(args.image.uri)
            if prebuilt is not None:
                pull_repository = aws.get_partition_output(
                    opts=pulumi.InvokeOptions(parent=self)
                ).partition.apply(prebuilt.repository_arn)
        else:
            token = aws.ecr.get_authorization_token_output(
                registry_id=repository.registry_id, opts=pulumi.InvokeOptions(parent=self)
            )
            image = docker.Image(
                f"{name}-image",
                image_name=repository.repository_url.apply(lambda url: f"{url}:{source_tag()}"),
                build=docker.DockerBuildArgs(
                    context=str(args.image.context),
                    dockerfile=str(args.image.dockerfile),
                    platform="linux/arm64",  # the task runs on Graviton (ARM64)
                    # The image pins the version the configuration is rendered for.
                    args={"PGBOUNCER_UPSTREAM_VERSION": pb.version},
                ),
                registry=docker.RegistryArgs(
                    server=repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                ),
                opts=child,
            )
            image_uri = image.repo_digest

        # -- the load balancer (its DNS name is in the pooler's certificate) ----------------
        nlb = aws.lb.LoadBalancer(
            f"{name}-nlb",
            # Load balancer and target group names are capped at 32 characters; a prefix (at
            # most 6) plus a generated suffix always fits, and a replacement gets a new name.
            name_prefix=LB_NAME_PREFIX,
            internal=True,
            load_balancer_type="network",
            subnets=args.subnet_ids,
            security_groups=[args.lb_sg_id],
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=s.is_prod,
            tags=tags,
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            name_prefix=LB_NAME_PREFIX,
            port=pb.port,
            protocol="TCP",
            target_type="ip",
            vpc_id=args.vpc_id,
            # A stopping task leaves the rotation this long before ECS sends SIGTERM. Its open
            # connections are not cut at the end (a reset would fail running transactions):
            # PgBouncer's safe shutdown closes each after its transaction.
            deregistration_delay=pb.deploy.deregistration_delay_s,
            connection_termination=False,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                protocol="TCP",
                port="traffic-port",
                interval=HEALTH_INTERVAL_S,
                healthy_threshold=HEALTH_THRESHOLD,
                unhealthy_threshold=HEALTH_THRESHOLD,
            ),
            tags=tags,
            opts=child,
        )
        listener = aws.lb.Listener(
            f"{name}-listener",
            load_balancer_arn=nlb.arn,
            port=pb.port,
            protocol="TCP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)
            ],
            tags=tags,
            opts=child,
        )

        # -- TLS to clients: a private CA, trusted by the functions through a layer -----------
        internal_secret, internal_version = self._tls(name, args, nlb.dns_name)

        # -- the ECS service ---------------------------------------------------------------
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name_prefix=f"/ecs/slotguard-{s.stack}-pgbouncer-",
            retention_in_days=LOG_RETENTION_DAYS[s.environment],
            tags=tags,
            opts=child,
        )
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=tags,
            opts=child,
        )
        execution_role = aws.iam.Role(
            f"{name}-execution-role",
            name_prefix=role_name_prefix(f"{self.service_name}-exec"),
            assume_role_policy=assume_role_policy("ecs-tasks.amazonaws.com"),
            description="Pulls the PgBouncer image, writes its logs, injects its secrets",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution_role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            # GetAuthorizationToken has no resource-level permissions.
                            "Sid": "RegistryLogin",
                            "Effect": "Allow",
                            "Action": "ecr:GetAuthorizationToken",
                            "Resource": "*",
                        },
                        {
                            "Sid": "PullImage",
                            "Effect": "Allow",
                            "Action": [
                                "ecr:BatchCheckLayerAvailability",
                                "ecr:BatchGetImage",
                                "ecr:GetDownloadUrlForLayer",
                            ],
                            "Resource": pull_repository,
                        },
                        {
                            "Sid": "Logs",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": log_group.arn.apply(lambda arn: f"{arn}:*"),
                        },
                        {
                            "Sid": "InjectSecrets",
                            "Effect": "Allow",
                            "Action": "secretsmanager:GetSecretValue",
                            # The verifier's own secret, never app_user's with its password.
                            "Resource": [
                                args.app_user_verifier_secret_arn,
                                *[arn for arn, _ in args.workload_verifiers.values()],
                                *(
                                    [args.app_user_clone_verifier_secret_arn]
                                    if args.app_user_clone_verifier_secret_arn is not None
                                    else []
                                ),
                                internal_secret.arn,
                            ],
                        },
                    ],
                }
            ),
            opts=child,
        )
        task_role = aws.iam.Role(
            f"{name}-task-role",
            name_prefix=role_name_prefix(f"{self.service_name}-task"),
            assume_role_policy=assume_role_policy("ecs-tasks.amazonaws.com"),
            description="PgBouncer's exporter: publishes its metrics to CloudWatch",
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=task_role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            # PutMetricData has no resource-level permissions; the condition
                            # keeps the task to its own namespace.
                            "Sid": "OwnMetrics",
                            "Effect": "Allow",
                            "Action": "cloudwatch:PutMetricData",
                            "Resource": "*",
                            "Condition": {
                                "StringEquals": {"cloudwatch:namespace": metrics.NAMESPACE}
                            },
                        }
                    ],
                }
            ),
            opts=child,
        )
        environment = {
            **task_environment(
                s,
                pb,
                database_address=args.database_address,
                database_port=args.database_port,
                region=region,
                service_name=self.service_name,
                budget=budget,
                reader_address=args.reader_address,
            ),
            **workload_pool_environment(budget),
        }
        user_verifier = f"{task_env.USER_VERIFIER_PREFIX}{budget.app_user.name.upper()}"
        container = {
            "name": CONTAINER,
            "image": image_uri,
            "essential": True,
            "portMappings": [{"containerPort": pb.port, "protocol": "tcp"}],
            "environment": [
                {"name": key, "value": value} for key, value in sorted(environment.items())
            ],
            # Each reference pins the secret's version: a renewed certificate or a rotated
            # verifier is a new version, hence a new task definition, hence a rolling deploy.
            "secrets": [
                {
                    "name": user_verifier,
                    "valueFrom": secret_reference(
                        args.app_user_verifier_secret_arn,
                        VERIFIER_KEY,
                        args.app_user_verifier_version_id,
                    ),
                },
                *[
                    {
                        "name": f"{task_env.USER_VERIFIER_PREFIX}{role.upper()}",
                        "valueFrom": secret_reference(arn, VERIFIER_KEY, version),
                    }
                    for role, (arn, version) in sorted(args.workload_verifiers.items())
                ],
                *(
                    [
                        {
                            "name": f"{user_verifier}{CLONE_SUFFIX.upper()}",
                            "valueFrom": secret_reference(
                                args.app_user_clone_verifier_secret_arn,
                                VERIFIER_KEY,
                                args.app_user_clone_verifier_version_id,
                            ),
                        }
                    ]
                    if args.app_user_clone_verifier_secret_arn is not None
                    and args.app_user_clone_verifier_version_id is not None
                    else []
                ),
                {
                    "name": f"{task_env.PREFIX}STATS_PASSWORD",
                    "valueFrom": secret_reference(
                        internal_secret.arn, "stats_password", internal_version.version_id
                    ),
                },
                {
                    "name": f"{task_env.PREFIX}CLIENT_TLS_CERT",
                    "valueFrom": secret_reference(
                        internal_secret.arn, "tls_cert", internal_version.version_id
                    ),
                },
                {
                    "name": f"{task_env.PREFIX}CLIENT_TLS_KEY",
                    "valueFrom": secret_reference(
                        internal_secret.arn, "tls_key", internal_version.version_id
                    ),
                },
            ],
            # Per process: one descriptor per client and server connection plus a margin.
            "ulimits": [
                {
                    "name": "nofile",
                    "softLimit": pb.file_descriptors,
                    "hardLimit": pb.file_descriptors,
                }
            ],
            "stopTimeout": pb.deploy.stop_timeout_s,
            # Every PgBouncer process answers on its admin console (pgbouncer/health.py).
            "healthCheck": {
                "command": ["CMD", "python", "-m", "pgbouncer.health"],
                "interval": HEALTH_INTERVAL_S * 3,
                "timeout": 5,
                "retries": 3,
                "startPeriod": HEALTH_INTERVAL_S * 2,
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group.name,
                    "awslogs-region": region,
                    "awslogs-stream-prefix": CONTAINER,
                },
            },
        }
        task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=self.service_name,
            cpu=str(s.pooler.pgbouncer.cpu),
            memory=str(s.pooler.pgbouncer.memory_mb),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="ARM64"
            ),
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            container_definitions=pulumi.Output.json_dumps([container]),
            tags=tags,
            opts=child,
        )
        service = aws.ecs.Service(
            f"{name}-service",
            cluster=cluster.arn,
            task_definition=task_definition.arn,
            desired_count=pb.tasks,
            launch_type="FARGATE",
            # The budget's deploy plan: `deploy_surge_tasks` new tasks start before any old one
            # stops, and every pool is sized for that peak.
            deployment_maximum_percent=pb.deploy.maximum_percent,
            deployment_minimum_healthy_percent=pb.deploy.minimum_healthy_percent,
            # Rebalancing starts and stops tasks outside any deploy; AWS turns it on by default
            # for a new service where maximumPercent allows it, so it is switched off by name.
            availability_zone_rebalancing="DISABLED",
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.subnet_ids,
                security_groups=[args.task_sg_id],
                assign_public_ip=False,
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_group.arn,
                    container_name=CONTAINER,
                    container_port=pb.port,
                )
            ],
            health_check_grace_period_seconds=HEALTH_GRACE_S,
            propagate_tags="SERVICE",
            # `pulumi up` waits until the service is stable (one deployment, all tasks running):
            # a first deploy that crash-loops fails it; an update that crash-loops is rolled
            # back by the circuit breaker before `pulumi up` returns.
            wait_for_steady_state=True,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[listener],
                # With target tracking the desired count is Application Auto Scaling's; a
                # `pulumi up` must not reset a scaled-out service to the minimum mid-burst.
                ignore_changes=["desiredCount"] if pb.deploy.scales else None,
            ),
        )
        targets: dict[str, pulumi.Input[str]] = {
            "LoadBalancer": nlb.arn_suffix,
            "TargetGroup": target_group.arn_suffix,
        }
        self.health_dimensions = {
            "pooler_tasks_missing": {"ClusterName": cluster.name, "ServiceName": service.name},
            "pooler_unhealthy_targets": targets,
            "pooler_healthy_targets": targets,
        }
        autoscaling(name, pb, cluster.name, service.name, parent=self)
        self.endpoint = nlb.dns_name
        # The read pool is another database name on the same NLB and port.
        self.read_endpoint: pulumi.Output[str] | None = (
            nlb.dns_name if args.reader_address is not None and budget.read_pool else None
        )
        # What `slotguard verify` reads: the service's running tasks and the NLB's targets.
        self.cluster_name = cluster.name
        # The service's generated physical name; `service_name` is the metrics' label only.
        self.ecs_service_name = service.name
        self.target_group_arn = target_group.arn
        self.register_outputs(
            {"endpoint": self.endpoint, "port": pb.port, "client_ca_pem": self.client_ca_pem}
        )

    def _tls(
        self, name: str, args: PgBouncerArgs, dns_name: pulumi.Output[str]
    ) -> tuple[aws.secretsmanager.Secret, aws.secretsmanager.SecretVersion]:
        """A private CA and the pooler's certificate for the NLB's name, in one secret.

        The functions trust the CA through a Lambda layer; the tasks get the key, the certificate
        and the stats user's password injected from the secret.
        """
        s, tags, child = args.settings, args.tags, pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"slotguard {s.stack} pooler CA"),
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing"],
            # Strict X.509 clients (Python 3.13's default context sets VERIFY_X509_STRICT)
            # refuse a CA without a Subject Key Identifier, and a leaf without an Authority Key
            # Identifier; the provider signs with Go's crypto/x509, which copies the CA's SKI
            # into the leaf's AKI. pulumi-tls leaves it off by default. Changing it replaces the
            # CA certificate of a running stack with one of the same key and subject, so leaves
            # old and new verify against either while tasks and functions roll.
            set_subject_key_id=True,
            opts=child,
        )
        server_key = tls.PrivateKey(
            f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child
        )
        request = tls.CertRequest(
            f"{name}-tls-csr",
            private_key_pem=server_key.private_key_pem,
            # The NLB's name (about 77 characters) goes in the SAN, which clients match; the CN
            # is a short label, since RFC 5280 caps it at 64 (ub-common-name).
            dns_names=[dns_name],
            subject=tls.CertRequestSubjectArgs(common_name=certificate_common_name(s.stack)),
            opts=child,
        )
        server_cert = tls.LocallySignedCert(
            f"{name}-tls-cert",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=ca_cert.cert_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            validity_period_hours=CERT_VALIDITY_HOURS,
            early_renewal_hours=CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            # RFC 5280 4.2.1.2: end-entity certificates SHOULD carry one too.
            set_subject_key_id=True,
            opts=child,
        )
        stats_password = random.RandomPassword(
            f"{name}-stats-password", length=40, special=False, opts=child
        )
        internal_secret = aws.secretsmanager.Secret(
            f"{name}-secret",
            name_prefix=f"slotguard/{s.stack}/pgbouncer-",
            description="PgBouncer's client TLS key and certificate and its stats password",
            recovery_window_in_days=30 if s.is_prod else 0,
            tags=tags,
            opts=child,
        )
        internal_version = aws.secretsmanager.SecretVersion(
            f"{name}-secret-version",
            secret_id=internal_secret.id,
            secret_string=pulumi.Output.json_dumps(
                {
                    "stats_password": stats_password.result,
                    "tls_cert": server_cert.cert_pem,
                    "tls_key": server_key.private_key_pem,
                }
            ).apply(pulumi.Output.secret),
            opts=child,
        )
        self.client_ca_pem = ca_cert.cert_pem
        # RFC 3339 end of the served certificate's validity, for `slotguard verify`.
        self.certificate_not_after = server_cert.validity_end_time
        self.client_sslrootcert = CLIENT_CA_PATH
        layer = aws.lambda_.LayerVersion(
            f"{name}-ca-layer",
            layer_name=f"slotguard-{s.stack}-pooler-ca",
            description="The PgBouncer pooler's CA certificate, for verify-full",
            code=ca_cert.cert_pem.apply(
                lambda pem: pulumi.AssetArchive({CLIENT_CA_LAYER_PATH: pulumi.StringAsset(pem)})
            ),
            compatible_runtimes=sorted(set(args.function_runtimes)) or None,
            compatible_architectures=sorted(set(args.function_architectures)) or None,
            opts=child,
        )
        self.client_ca_layer_arn = layer.arn
        return internal_secret, internal_version
