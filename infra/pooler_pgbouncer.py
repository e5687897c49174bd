"""PgBouncer on ECS Fargate behind an internal NLB, configured entirely from the budget.

The task's environment is exactly what `pgbouncer.environment` reads: every pool number comes
from `budget.pgbouncer`, secrets (the role's SCRAM verifier, the stats password, the client TLS
key) are injected by ECS from Secrets Manager, never written into the task definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

from infra.aws_constraints import fargate_pair_problem
from infra.budget import Budget, PgBouncerBudget
from infra.functions import LOG_RETENTION_DAYS, assume_role_policy, role_name_prefix
from infra.settings import SettingsError, StackSettings
from pgbouncer import environment as task_env
from pgbouncer import metrics

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "pgbouncer"
# Where the functions find the pooler's CA: a Lambda layer unpacks under /opt.
CLIENT_CA_LAYER_PATH = "certs/pooler-ca.pem"
CLIENT_CA_PATH = f"/opt/{CLIENT_CA_LAYER_PATH}"
# NLB health check: a TCP connect to the listener every 10 s, two results to change state.
HEALTH_INTERVAL_S = 10
HEALTH_THRESHOLD = 2
# A stopping task stays registered this long so in-flight transactions finish; PgBouncer's own
# drain (SIGTERM -> safe shutdown) runs within ECS's 30 s stop timeout after it.
DEREGISTRATION_DELAY_S = 30
# The pooler's certificates: a private CA only the stack's functions trust.
CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 2 * 365 * 24
CERT_EARLY_RENEWAL_HOURS = 30 * 24
LB_NAME_PREFIX = "sgpgb-"
# A prod pooler survives one task or AZ failing.
PROD_MIN_TASKS = 2
# ECS waits this long after SIGTERM before killing the container; PgBouncer's safe shutdown
# (the entrypoint's drain) must end a few seconds before.
STOP_TIMEOUT_S = 30
DRAIN_TIMEOUT_S = STOP_TIMEOUT_S - 5
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


ImageSource = DockerBuild | PrebuiltImage


def source_tag(directory: Path = ROOT / "pgbouncer") -> str:
    """A content tag of the image sources, so an unchanged pooler is never redeployed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def task_environment(
    settings: StackSettings,
    pb: PgBouncerBudget,
    *,
    database_address: pulumi.Input[str],
    database_port: pulumi.Input[int],
    region: pulumi.Input[str],
    service_name: str,
) -> dict[str, pulumi.Input[str]]:
    """`PGBOUNCER_*` variables (docs/pgbouncer.md): the budget's per-process numbers."""
    p = task_env.PREFIX
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
        f"{p}DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
        f"{p}METRICS": "on",
        f"{p}METRICS_NAMESPACE": metrics.NAMESPACE,
        f"{p}METRICS_DIMENSIONS": dimensions,
        # One datapoint per alarm period at least (CloudWatch aggregates the tasks' points).
        f"{p}METRICS_INTERVAL_S": str(min(settings.alarms.period_s, 60)),
        "AWS_REGION": region,
    }


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
    app_user_secret_arn: pulumi.Input[str]
    tags: dict[str, str]
    function_runtimes: Sequence[str] = ()
    function_architectures: Sequence[str] = ()


class PgBouncerPooler(pulumi.ComponentResource):
    """ECR image, ECS service of at least two tasks, internal NLB, TLS certificates."""

    kind = "pgbouncer"
    endpoint: pulumi.Output[str]
    port: int
    auth_resource: pulumi.Output[str] | None = None
    client_ca_layer_arn: pulumi.Output[str] | None
    client_sslrootcert: str
    service_name: str
    dimensions: dict[str, str]
    client_ca_pem: pulumi.Output[str]

    def __init__(
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
        self.dimensions = metric_dimensions(s, self.service_name)
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region

        # -- the image ----------------------------------------------------------------------
        repository = aws.ecr.Repository(
            f"{name}-repo",
            name=f"slotguard-{s.stack}-pgbouncer",
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
        if isinstance(args.image, PrebuiltImage):
            image_uri = pulumi.Output.from_input(args.image.uri)
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
            deregistration_delay=DEREGISTRATION_DELAY_S,
            connection_termination=True,
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
        internal_secret = self._tls(name, args, nlb.dns_name)

        # -- the ECS service ---------------------------------------------------------------
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/ecs/slotguard-{s.stack}-pgbouncer",
            retention_in_days=LOG_RETENTION_DAYS[s.environment],
            tags=tags,
            opts=child,
        )
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=f"slotguard-{s.stack}",
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
                            "Resource": repository.arn,
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
                            "Resource": [args.app_user_secret_arn, internal_secret.arn],
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
        environment = task_environment(
            s,
            pb,
            database_address=args.database_address,
            database_port=args.database_port,
            region=region,
            service_name=self.service_name,
        )
        user_verifier = f"{task_env.USER_VERIFIER_PREFIX}{budget.app_user.name.upper()}"
        container = {
            "name": CONTAINER,
            "image": image_uri,
            "essential": True,
            "portMappings": [{"containerPort": pb.port, "protocol": "tcp"}],
            "environment": [
                {"name": key, "value": value} for key, value in sorted(environment.items())
            ],
            "secrets": [
                # Only the verifier key of the role's secret: no plaintext password in the task.
                {
                    "name": user_verifier,
                    "valueFrom": pulumi.Output.concat(
                        args.app_user_secret_arn, ":scram_verifier::"
                    ),
                },
                {
                    "name": f"{task_env.PREFIX}STATS_PASSWORD",
                    "valueFrom": pulumi.Output.concat(internal_secret.arn, ":stats_password::"),
                },
                {
                    "name": f"{task_env.PREFIX}CLIENT_TLS_CERT",
                    "valueFrom": pulumi.Output.concat(internal_secret.arn, ":tls_cert::"),
                },
                {
                    "name": f"{task_env.PREFIX}CLIENT_TLS_KEY",
                    "valueFrom": pulumi.Output.concat(internal_secret.arn, ":tls_key::"),
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
            "stopTimeout": STOP_TIMEOUT_S,
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
        aws.ecs.Service(
            f"{name}-service",
            name=self.service_name,
            cluster=cluster.arn,
            task_definition=task_definition.arn,
            desired_count=pb.tasks,
            launch_type="FARGATE",
            # Never more tasks than the budget: a rolling deploy stops one before starting its
            # replacement, so server connections never exceed tasks x per-task share.
            deployment_maximum_percent=100,
            deployment_minimum_healthy_percent=100 * (pb.tasks - 1) // pb.tasks,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            availability_zone_rebalancing="ENABLED",  # keep the tasks spread over the AZs
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
            health_check_grace_period_seconds=DEREGISTRATION_DELAY_S,
            propagate_tags="SERVICE",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[listener]),
        )
        self.endpoint = nlb.dns_name
        self.register_outputs(
            {"endpoint": self.endpoint, "port": pb.port, "client_ca_pem": self.client_ca_pem}
        )

    def _tls(
        self, name: str, args: PgBouncerArgs, dns_name: pulumi.Output[str]
    ) -> aws.secretsmanager.Secret:
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
            opts=child,
        )
        server_key = tls.PrivateKey(
            f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child
        )
        request = tls.CertRequest(
            f"{name}-tls-csr",
            private_key_pem=server_key.private_key_pem,
            dns_names=[dns_name],
            subject=tls.CertRequestSubjectArgs(common_name=dns_name),
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
        aws.secretsmanager.SecretVersion(
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
        return internal_secret
