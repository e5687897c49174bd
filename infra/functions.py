"""The Lambda functions: wired to the pooler, bounded by reserved concurrency, least privilege.

Every function's `DB_HOST` is the pooler endpoint passed in by the program; this module never sees
the database instance, so no application function can be wired past the pooler by mistake.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.budget import Budget
from infra.settings import FunctionSettings, SettingsError, StackSettings

# Where the packaged functions find the RDS CA bundle (the packaging builder ships it); RDS
# signs the database's certificate with it.
RDS_CA_BUNDLE_PATH = "/var/task/certs/rds-global-bundle.pem"
# libpq (16+) `sslrootcert=system`: the platform's public CAs. Not usable on Lambda with
# psycopg-binary (its OpenSSL looks under /usr/lib/psycopg-openssl); every pooler passes its own
# path (RDS Proxy: the Amazon roots the packaging builder ships).
SYSTEM_CA = "system"
METRICS_NAMESPACE = "slotguard"
# CloudWatch Logs retention per environment: a week of debugging history on dev, a month on prod.
LOG_RETENTION_DAYS = {"dev": 7, "prod": 30}
# Lambda's own limit on function names.
MAX_FUNCTION_NAME = 64
# IAM role names are at most 64 characters; a `name_prefix` gets 26 generated ones after it.
MAX_ROLE_PREFIX = 64 - 26

Statement = Mapping[str, Any]


@dataclass(frozen=True)
class FunctionCode:
    """A deployable artifact for one (runtime, architecture) pair."""

    archive: pulumi.Archive
    sha256_b64: str | None = None  # Lambda's `source_code_hash`; redeploys only on change


CodeSource = Callable[[str, str], FunctionCode]


# The provider's value for "no reservation": "`-1` removes any concurrency limitations" (pulumi-aws
# `lambda_.Function` reserved_concurrent_executions docstring), so a function that had one loses
# it in place rather than keeping it because the input was left out.
UNRESERVED = -1


def lambda_reservation(reserved: int | None) -> int:
    """The Lambda resource's `reserved_concurrent_executions` for a budget's reservation."""
    return UNRESERVED if reserved is None else reserved


def function_name(stack: str, key: str) -> str:
    """`slotguard-<stack>-<key>`, refused with the setting to change when Lambda would be."""
    name = f"slotguard-{stack}-{key}"
    if len(name) > MAX_FUNCTION_NAME:
        raise SettingsError(
            [
                f"functions.{key}: the Lambda name {name!r} is {len(name)} characters, over "
                f"Lambda's {MAX_FUNCTION_NAME}; shorten the stack or function name"
            ]
        )
    return name


def role_name_prefix(base: str) -> str:
    """An IAM role `name_prefix`: AWS appends 26 characters and caps names at 64.

    Pulumi's auto-naming adds a suffix to the logical name and fails past 64 characters rather
    than shortening it, so roles are named by prefix, cut to fit.
    """
    return f"{base[: MAX_ROLE_PREFIX - 1]}-"


def assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


@dataclass
class LambdaFunctionArgs:
    function_name: str
    handler: str
    runtime: str
    architecture: str
    memory_mb: int
    timeout_s: int
    reserved_concurrency: int | None  # None: unreserved
    code: FunctionCode
    environment: Mapping[str, pulumi.Input[str]]
    subnet_ids: pulumi.Input[list[str]]
    security_group_ids: Sequence[pulumi.Input[str]]
    statements: Sequence[pulumi.Input[Statement]]
    log_retention_days: int
    tags: dict[str, str]
    url: bool = False
    layers: Sequence[pulumi.Input[str]] = field(default_factory=list)
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class LambdaFunction(pulumi.ComponentResource):
    """One function with its role, its log group and, if asked, its Function URL."""

    function: aws.lambda_.Function
    url: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: LambdaFunctionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:functions:LambdaFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=args.log_retention_days,
            tags=args.tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-role",
            name_prefix=role_name_prefix(args.function_name),
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            description=f"{args.function_name}: logs, VPC interfaces and its own credentials",
            tags=args.tags,
            opts=child,
        )
        statements: list[pulumi.Input[Statement]] = [
            {
                "Sid": "OwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_group.arn.apply(lambda arn: [arn, f"{arn}:*"]),
            },
            {
                # Lambda manages the VPC interfaces on the function's behalf; these EC2 actions
                # do not support resource-level permissions.
                "Sid": "VpcInterfaces",
                "Effect": "Allow",
                "Action": [
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                "Resource": "*",
            },
            *args.statements,
        ]
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=args.function_name,
            role=role.arn,
            handler=args.handler,
            runtime=args.runtime,
            architectures=[args.architecture],
            memory_size=args.memory_mb,
            timeout=args.timeout_s,
            reserved_concurrent_executions=lambda_reservation(args.reserved_concurrency),
            code=args.code.archive,
            layers=list(args.layers) or None,
            source_code_hash=args.code.sha256_b64,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(args.environment)),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=args.subnet_ids,
                security_group_ids=list(args.security_group_ids),
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=log_group.name
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[log_group, policy, *args.depends_on]
            ),
        )
        self.url = None
        if args.url:
            # IAM-authenticated: callers sign requests (SigV4). Put an API gateway or CloudFront
            # with your own auth in front to serve the public.
            function_url = aws.lambda_.FunctionUrl(
                f"{name}-url",
                function_name=self.function.name,
                authorization_type="AWS_IAM",
                opts=child,
            )
            self.url = function_url.function_url
        self.register_outputs({"name": self.function.name, "arn": self.function.arn})


@dataclass
class FunctionsArgs:
    settings: StackSettings
    budget: Budget
    code: CodeSource
    pooler_host: pulumi.Input[str]
    pooler_auth_resource: pulumi.Input[str] | None  # `rds-db:connect` ARN prefix for IAM auth
    app_user_secret_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    tags: dict[str, str]
    # Each workload's role secret (stack setting `workloads`); its functions read that one.
    workload_secret_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # How the functions verify the pooler's certificate: a CA path, or `system`.
    sslrootcert: str = SYSTEM_CA
    layers: Sequence[pulumi.Input[str]] = field(default_factory=list)
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)
    # The read-only path's host (Aurora with readers): the pooler's read endpoint.
    pooler_read_host: pulumi.Input[str] | None = None


def application_environment(
    settings: StackSettings,
    budget: Budget,
    key: str,
    *,
    pooler_host: pulumi.Input[str],
    secret_arn: pulumi.Input[str] | None,
    sslrootcert: str,
    read_host: pulumi.Input[str] | None = None,
) -> dict[str, pulumi.Input[str]]:
    """The contract's variables: budget numbers plus where the pooler and credentials are."""
    iam = budget.rds_proxy is not None and budget.rds_proxy.iam_auth
    env: dict[str, pulumi.Input[str]] = {
        **budget.function_environment(key),
        "DB_HOST": pooler_host,
        "DB_NAME": settings.database.name,
        "DB_AUTH": "iam" if iam else "secret",
        "DB_SSLROOTCERT": sslrootcert,
        "HEALTH_ALARM_PERCENT": str(settings.alarms.critical_percent),
        "POWERTOOLS_SERVICE_NAME": key,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    }
    if not iam and secret_arn is not None:
        env["DB_SECRET_ARN"] = secret_arn
    if read_host is not None and budget.read_pool is not None:
        env["DB_READ_HOST"] = read_host
    return env


class Functions(pulumi.ComponentResource):
    """Every application function of the stack's settings."""

    functions: dict[str, LambdaFunction]
    urls: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:functions:Functions", name, None, opts)
        s = args.settings
        self.functions = {}
        self.urls = {}
        for key, fn in sorted(s.functions.items()):
            credentials = _credentials(args, key)
            self.functions[key] = _application_function(
                f"{name}-{key}", key, fn=fn, args=args, credentials=credentials, parent=self
            )
            url = self.functions[key].url
            if url is not None:
                self.urls[key] = url
        self.register_outputs({key: f.function.arn for key, f in self.functions.items()})


def secret_arn_of(args: FunctionsArgs, key: str) -> pulumi.Input[str]:
    """The secret a function reads: its workload's role's, app_user's by default."""
    workload = args.budget.functions[key].workload
    if workload in args.budget.workloads:
        return args.workload_secret_arns[workload]
    return args.app_user_secret_arn


def _credentials(args: FunctionsArgs, key: str) -> Statement:
    """The one credential a function may use: its role's secret, or its role's IAM login."""
    budget = args.budget
    if budget.rds_proxy is not None and budget.rds_proxy.iam_auth:
        assert args.pooler_auth_resource is not None
        return {
            "Sid": "ProxyIamAuth",
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": pulumi.Output.concat(args.pooler_auth_resource, "/", budget.role_of(key)),
        }
    return {
        "Sid": "OwnSecret",
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": secret_arn_of(args, key),
    }


def _application_function(
    resource_name: str,
    key: str,
    *,
    fn: FunctionSettings,
    args: FunctionsArgs,
    credentials: Statement,
    parent: pulumi.Resource,
) -> LambdaFunction:
    budget = args.budget
    return LambdaFunction(
        resource_name,
        LambdaFunctionArgs(
            function_name=function_name(args.settings.stack, key),
            handler=fn.handler,
            runtime=fn.runtime,
            architecture=fn.architecture,
            memory_mb=fn.memory_mb,
            timeout_s=budget.functions[key].timeout_s,
            reserved_concurrency=budget.functions[key].reserved_concurrency,
            code=args.code(fn.runtime, fn.architecture),
            environment=application_environment(
                args.settings,
                budget,
                key,
                pooler_host=args.pooler_host,
                secret_arn=secret_arn_of(args, key),
                sslrootcert=args.sslrootcert,
                read_host=args.pooler_read_host,
            ),
            subnet_ids=args.subnet_ids,
            security_group_ids=[args.security_group_id],
            statements=[credentials],
            log_retention_days=LOG_RETENTION_DAYS[args.settings.environment],
            tags=args.tags,
            url=fn.url,
            layers=list(args.layers),
            depends_on=list(args.depends_on),
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
