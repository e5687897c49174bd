"""The network: private subnets, VPC endpoints and the security-group chain.

Functions may reach only the pooler, the pooler only the database, and the bootstrap function alone
the database directly. Every rule references a security group, never a CIDR, so nothing is open to
0.0.0.0/0; the only exception is HTTPS *egress* to AWS APIs through an existing VPC's NAT when
the stack creates no VPC endpoints.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import NetworkSettings, SettingsError

HTTPS = 443
ANYWHERE = "0.0.0.0/0"
# The AWS APIs called from the private subnets, per pooler kind. Functions and the bootstrap read
# only their secrets (Lambda ships their logs itself, and metrics leave as log lines), so an RDS
# Proxy stack needs Secrets Manager alone; PgBouncer's Fargate tasks also pull their image (ECR
# API and registry; layers from S3), write logs (awslogs) and publish metrics (PutMetricData).
POOLER_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "rds-proxy": ("secretsmanager",),
    "pgbouncer": ("secretsmanager", "logs", "monitoring", "ecr.api", "ecr.dkr"),
}
# Every interface endpoint any stack may create (the README's cost table counts these).
INTERFACE_ENDPOINTS = POOLER_ENDPOINTS["pgbouncer"]
# The only S3 bucket the gateway endpoint serves: ECR's image layers. "Minimum Amazon S3 bucket
# permissions for Amazon ECR", https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html
ECR_LAYER_BUCKET = "prod-{region}-starport-layer-bucket"
# What the callers may do through each interface endpoint (the endpoint policy's actions).
ENDPOINT_ACTIONS: dict[str, tuple[str, ...]] = {
    "secretsmanager": ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"),
    "logs": ("logs:CreateLogStream", "logs:PutLogEvents"),
    "monitoring": ("cloudwatch:PutMetricData",),
    "ecr.api": (
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    ),
    "ecr.dkr": (
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    ),
}
# Secrets the stacks read: theirs (`slotguard/<stack>/...`) and the master secret RDS manages
# (`rds!db-...`). Not one stack's alone: other stacks sharing the VPC reuse the endpoint.
SECRET_NAME_PATTERNS = ("slotguard/*", "rds!db-*")
# The provider's error when a singular data source matches nothing.
NOT_FOUND = "no matching"
# Subnets of a new VPC: one /20 per AZ, 4,096 addresses each, room for Lambda ENIs and tasks.
SUBNET_PREFIX = 20


@dataclass
class NetworkArgs:
    settings: NetworkSettings
    database_port: int
    pooler_port: int
    pooler_kind: str
    tags: dict[str, str]
    # An existing database's own security group: the stack adds its ingress rules to it (named,
    # removed with the stack) instead of creating a database group.
    database_sg_id: str | None = None
    # Secrets besides the stack's own and `rds!db-*` that the bootstrap reads through the
    # Secrets Manager endpoint (see endpoint_policy).
    extra_secrets: tuple[str, ...] = ()


def _service_name(region: str, service: str) -> str:
    return f"com.amazonaws.{region}.{service}"


def interface_endpoints(pooler_kind: str) -> tuple[str, ...]:
    """The interface endpoints a stack with this pooler kind needs."""
    return POOLER_ENDPOINTS[pooler_kind]


def needs_s3_gateway(pooler_kind: str) -> bool:
    """Only image pulls (PgBouncer's tasks) read from S3: ECR's layer bucket."""
    return "ecr.dkr" in POOLER_ENDPOINTS[pooler_kind]


def endpoint_policy(
    service: str, region: str, account: str, extra_secrets: tuple[str, ...] = ()
) -> str:
    """The endpoint policy: only the calls the stack makes, by this account, on its resources.

    `Principal: *` alone would let code in the VPC holding another account's credentials write
    that account's logs and metrics or read its secrets through the endpoint. Interface
    endpoints therefore require `aws:PrincipalAccount` and `aws:ResourceAccount` to be the
    stack's account (AWS global condition context keys,
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html;
    "Control access to VPC endpoints using endpoint policies",
    https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-access.html). The S3
    gateway endpoint serves only ECR's AWS-owned layer bucket, whose requests are presigned by
    an ECR account, not by the stack's principals (aws-samples/data-perimeter-policy-examples,
    vpc_endpoint_policies/README.md, "Creation of containers with Amazon ECR images"): an
    account condition there would break image pulls, so the bucket ARN is its limit.

    `extra_secrets`: further secret name patterns or ARNs the stack reads (an Aurora cluster's
    RDS-managed master secret, `rds!cluster-*`; an existing database's master secret).
    """
    statement: dict[str, object] = {
        "Sid": "SlotguardCalls",
        "Effect": "Allow",
        "Principal": "*",
        "Action": list(ENDPOINT_ACTIONS.get(service, ())),
        "Resource": "*",
    }
    if service == "s3":
        statement["Action"] = ["s3:GetObject"]
        statement["Resource"] = [f"arn:*:s3:::{ECR_LAYER_BUCKET.format(region=region)}/*"]
    else:
        statement["Condition"] = {
            "StringEquals": {"aws:PrincipalAccount": account, "aws:ResourceAccount": account}
        }
    if service == "secretsmanager":
        statement["Resource"] = [
            f"arn:*:secretsmanager:{region}:{account}:secret:{pattern}"
            for pattern in SECRET_NAME_PATTERNS
        ] + [
            extra
            if extra.startswith("arn:")
            else f"arn:*:secretsmanager:{region}:{account}:secret:{extra}"
            for extra in extra_secrets
        ]
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


def _policy_of(service: str, extra_secrets: tuple[str, ...], region_and_account: list[str]) -> str:
    region, account = region_and_account
    return endpoint_policy(service, region, account, extra_secrets)


@dataclass(frozen=True)
class ExistingVpc:
    """What the program reads about an existing VPC before declaring anything in it."""

    route_table_ids: list[str]
    # service -> (endpoint id, its security groups) for endpoints that already exist
    endpoints: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    s3_prefix_list_id: str | None = None
    s3_endpoint_id: str | None = None
    # route tables of the stack's subnets that the existing S3 endpoint does not serve yet
    s3_missing_route_tables: list[str] = field(default_factory=list)


def _find_endpoint(
    vpc_id: str, service_name: str, endpoint_type: str, parent: pulumi.Resource
) -> aws.ec2.GetVpcEndpointResult | None:
    try:
        return aws.ec2.get_vpc_endpoint(
            vpc_id=vpc_id,
            service_name=service_name,
            vpc_endpoint_type=endpoint_type,
            state="available",
            opts=pulumi.InvokeOptions(parent=parent),
        )
    except Exception as error:  # the provider reports "not found" as an invoke error
        if NOT_FOUND in str(error):
            return None
        raise


def usable_zones(
    names: Sequence[str], offered: Mapping[str, Collection[str]], count: int
) -> list[str]:
    """The first `count` AZs, in the region's order, where every interface endpoint is offered.

    An interface endpoint service is not offered in every AZ of every region
    (DescribeVpcEndpointServices' ServiceDetail.AvailabilityZones,
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ServiceDetail.html), and an
    endpoint cannot have a subnet in an AZ its service lacks.
    """
    fit = [z for z in names if all(z in zones for zones in offered.values())]
    if len(fit) < count:
        lacking = {
            service: [z for z in names if z not in zones]
            for service, zones in offered.items()
            if any(z not in zones for z in names)
        }
        detail = "; ".join(f"{svc} is not offered in {', '.join(z)}" for svc, z in lacking.items())
        raise SettingsError(
            [
                f"network.availability_zones: {count} AZs asked for, but the region has only "
                f"{len(fit)} available AZs where every endpoint the stack needs is offered "
                f"({', '.join(fit) or 'none'}{'; ' + detail if detail else ''}); lower "
                "network.availability_zones"
            ]
        )
    return fit[:count]


def _chosen_zones(values: list[Any], services: tuple[str, ...], count: int) -> list[str]:
    names, *offers = values
    return usable_zones(list(names), dict(zip(services, offers, strict=True)), count)


class Network(pulumi.ComponentResource):
    """A VPC (new or existing), its private subnets and the security groups of every tier."""

    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]
    functions_sg_id: pulumi.Output[str]
    bootstrap_sg_id: pulumi.Output[str]
    pooler_sg_id: pulumi.Output[str]
    pooler_lb_sg_id: pulumi.Output[str] | None
    database_sg_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:network:Network", name, None, opts)
        s = args.settings
        self._name, self._tags = name, args.tags
        self._pooler_kind = args.pooler_kind
        self._existing: ExistingVpc | None = None
        # Endpoints and security-group rules: what the functions and the bootstrap need in place
        # before they run, so they can depend on them explicitly.
        self.ready: list[pulumi.Resource] = []
        self._child = pulumi.ResourceOptions(parent=self)
        if s.mode == "new-vpc" and not s.vpc_endpoints:
            raise SettingsError(
                [
                    "network.vpc_endpoints: a new VPC has private subnets only and no NAT "
                    "gateway, so without VPC endpoints the functions and tasks cannot reach "
                    "Secrets Manager, CloudWatch or ECR; keep vpc_endpoints true or use mode "
                    "`existing` with a VPC that has a NAT gateway"
                ]
            )
        route_tables = self._new_vpc(s) if s.mode == "new-vpc" else self._existing_vpc(s)
        self._security_groups(args)
        if s.vpc_endpoints:
            self._endpoints(args, route_tables)
        else:
            self._nat_egress(args)
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "subnet_ids": self.subnet_ids,
                "functions_sg_id": self.functions_sg_id,
                "pooler_sg_id": self.pooler_sg_id,
                "database_sg_id": self.database_sg_id,
            }
        )

    # -- the VPC ---------------------------------------------------------------------------

    def _new_vpc(self, s: NetworkSettings) -> list[pulumi.Input[str]]:
        name, tags, child = self._name, self._tags, self._child
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(s.cidr),
            enable_dns_hostnames=True,  # interface endpoints' private DNS needs both
            enable_dns_support=True,
            tags={**tags, "Name": f"{name}-vpc"},
            opts=child,
        )
        # AWS creates every VPC with a default security group that lets its members talk to each
        # other and reach anywhere; adopting it with no rules removes them (provider docstring of
        # `ec2.DefaultSecurityGroup`; Security Hub control EC2.2).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            tags={**tags, "Name": f"{name}-default-closed"},
            opts=child,
        )
        invoke = pulumi.InvokeOptions(parent=self)
        names = aws.get_availability_zones_output(state="available", opts=invoke).names
        services = interface_endpoints(self._pooler_kind) if s.vpc_endpoints else ()
        offers = [
            aws.ec2.get_vpc_endpoint_service_output(
                service=service, service_type="Interface", opts=invoke
            ).availability_zones
            for service in services
        ]
        chosen = pulumi.Output.all(names, *offers).apply(
            functools.partial(_chosen_zones, services=services, count=s.availability_zones)
        )
        blocks = list(s.cidr.subnets(new_prefix=max(SUBNET_PREFIX, s.cidr.prefixlen + 3)))
        route_table = aws.ec2.RouteTable(
            f"{name}-private",
            vpc_id=vpc.id,
            tags={**tags, "Name": f"{name}-private"},
            opts=child,
        )
        subnets: list[pulumi.Output[str]] = []
        for index in range(s.availability_zones):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[index]),
                availability_zone=chosen.apply(operator.itemgetter(index)),
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-private-{index}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}",
                subnet_id=subnet.id,
                route_table_id=route_table.id,
                opts=child,
            )
            subnets.append(subnet.id)
        self.vpc_id = vpc.id
        self.subnet_ids = pulumi.Output.all(*subnets).apply(list)
        return [route_table.id]

    def _existing_vpc(self, s: NetworkSettings) -> list[pulumi.Input[str]]:
        if s.vpc_id is None:
            raise SettingsError(["network.vpc_id: mode `existing` needs the VPC's id"])
        self.vpc_id = pulumi.Output.from_input(s.vpc_id)
        self.subnet_ids = pulumi.Output.from_input(list(s.subnet_ids))
        self._existing = read_existing_vpc(s, self._pooler_kind, parent=self)
        return list(self._existing.route_table_ids)

    # -- security groups -------------------------------------------------------------------

    def _group(self, role: str, description: str) -> aws.ec2.SecurityGroup:
        # No inline rules: the provider removes AWS's default allow-all egress, and every
        # permitted flow is one of the standalone rules.
        return aws.ec2.SecurityGroup(
            f"{self._name}-sg-{role}",
            vpc_id=self.vpc_id,
            description=description,
            tags={**self._tags, "Name": f"{self._name}-sg-{role}"},
            opts=self._child,
        )

    def _allow(
        self,
        rule: str,
        source: aws.ec2.SecurityGroup,
        target: aws.ec2.SecurityGroup | str,
        port: int,
        description: str,
    ) -> None:
        """One flow source -> target: egress on the source and ingress on the target."""
        target_id = target if isinstance(target, str) else target.id
        egress = aws.vpc.SecurityGroupEgressRule(
            f"{self._name}-out-{rule}",
            security_group_id=source.id,
            referenced_security_group_id=target_id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=description,
            tags=self._tags,
            opts=self._child,
        )
        ingress = aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-in-{rule}",
            security_group_id=target_id,
            referenced_security_group_id=source.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=description,
            tags=self._tags,
            opts=self._child,
        )
        self.ready += [egress, ingress]

    def _security_groups(self, args: NetworkArgs) -> None:
        functions = self._group("functions", "Lambda functions: out to the pooler only")
        bootstrap = self._group("bootstrap", "Bootstrap function: out to the database")
        pooler = self._group("pooler", f"{args.pooler_kind}: from functions, to the database")
        database: aws.ec2.SecurityGroup | str
        if args.database_sg_id is not None:
            # The team's database: its group gets two named ingress rules (pooler, bootstrap)
            # and nothing else; `pulumi destroy` removes them and leaves the group as it was.
            database = args.database_sg_id
        else:
            database = self._group("db", "RDS PostgreSQL: from the pooler and the bootstrap only")
        lb: aws.ec2.SecurityGroup | None = None
        if args.pooler_kind == "pgbouncer":
            lb = self._group("pooler-lb", "Internal NLB in front of PgBouncer: from functions")
        front = lb if lb is not None else pooler
        self._allow(
            "functions-pooler", functions, front, args.pooler_port, "functions to the pooler"
        )
        if lb is not None:
            # The NLB forwards clients and its health checks to the tasks on the same port.
            self._allow("lb-tasks", lb, pooler, args.pooler_port, "NLB to the PgBouncer tasks")
        owner = (
            f"slotguard {self._name.removeprefix('slotguard-')}: " if args.database_sg_id else ""
        )
        self._allow(
            "pooler-db", pooler, database, args.database_port, f"{owner}pooler to the database"
        )
        self._allow(
            "bootstrap-db",
            bootstrap,
            database,
            args.database_port,
            f"{owner}bootstrap to the database",
        )
        self._api_callers = [("functions", functions), ("bootstrap", bootstrap)]
        if args.pooler_kind == "pgbouncer":
            self._api_callers.append(("pooler", pooler))  # image pulls, secrets, logs, metrics
        self._pooler_group = pooler
        self.functions_sg_id = functions.id
        self.bootstrap_sg_id = bootstrap.id
        self.pooler_sg_id = pooler.id
        self.pooler_lb_sg_id = lb.id if lb is not None else None
        self.database_sg_id = (
            pulumi.Output.from_input(database) if isinstance(database, str) else database.id
        )

    # -- reaching AWS APIs -----------------------------------------------------------------

    def _endpoints(self, args: NetworkArgs, route_tables: list[pulumi.Input[str]]) -> None:
        name, tags, child = self._name, self._tags, self._child
        existing = self._existing or ExistingVpc(route_table_ids=[])
        endpoints = self._group("endpoints", "VPC interface endpoints: HTTPS from the stack")
        for role, source in self._api_callers:
            self._allow(f"{role}-endpoints", source, endpoints, HTTPS, f"{role} to AWS APIs")
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        for service in interface_endpoints(args.pooler_kind):
            slug = service.replace(".", "-")
            found = existing.endpoints.get(service)
            if found is not None:
                # The VPC has one already: a second endpoint with private DNS for the same
                # service is refused, so the stack uses it and admits its callers to it.
                self._admit(slug, found[1])
                continue
            self.ready.append(
                aws.ec2.VpcEndpoint(
                    f"{name}-vpce-{slug}",
                    vpc_id=self.vpc_id,
                    service_name=region.apply(functools.partial(_service_name, service=service)),
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=self.subnet_ids,
                    security_group_ids=[endpoints.id],
                    policy=pulumi.Output.all(region, account).apply(
                        functools.partial(_policy_of, service, args.extra_secrets)
                    ),
                    tags={**tags, "Name": f"{name}-vpce-{service}"},
                    opts=child,
                )
            )
        if not needs_s3_gateway(args.pooler_kind):
            return
        prefix_list: pulumi.Input[str]
        if existing.s3_prefix_list_id is not None:
            # A route table holds one route per prefix list: the VPC's own S3 endpoint serves.
            prefix_list = existing.s3_prefix_list_id
            assert existing.s3_endpoint_id is not None
            for table in existing.s3_missing_route_tables:
                self.ready.append(
                    aws.ec2.VpcEndpointRouteTableAssociation(
                        f"{name}-vpce-s3-{table}",
                        vpc_endpoint_id=existing.s3_endpoint_id,
                        route_table_id=table,
                        opts=child,
                    )
                )
        else:
            s3 = aws.ec2.VpcEndpoint(
                f"{name}-vpce-s3",
                vpc_id=self.vpc_id,
                service_name=region.apply(functools.partial(_service_name, service="s3")),
                vpc_endpoint_type="Gateway",
                route_table_ids=route_tables,
                policy=pulumi.Output.all(region, account).apply(
                    functools.partial(_policy_of, "s3", ())
                ),
                tags={**tags, "Name": f"{name}-vpce-s3"},
                opts=child,
            )
            self.ready.append(s3)
            prefix_list = s3.prefix_list_id
        # ECR serves image layers from S3, reached through the gateway endpoint.
        self.ready.append(
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-out-pooler-s3",
                security_group_id=self._pooler_group.id,
                prefix_list_id=prefix_list,
                ip_protocol="tcp",
                from_port=HTTPS,
                to_port=HTTPS,
                description="PgBouncer tasks to S3 (image layers)",
                tags=tags,
                opts=child,
            )
        )

    def _admit(self, slug: str, group_ids: list[str]) -> None:
        """HTTPS from this stack's callers to an endpoint the VPC already has."""
        for role, source in self._api_callers:
            for index, group_id in enumerate(group_ids):
                rule = f"{role}-{slug}-{index}"
                self.ready.append(
                    aws.vpc.SecurityGroupEgressRule(
                        f"{self._name}-out-{rule}",
                        security_group_id=source.id,
                        referenced_security_group_id=group_id,
                        ip_protocol="tcp",
                        from_port=HTTPS,
                        to_port=HTTPS,
                        description=f"{role} to the VPC's {slug} endpoint",
                        tags=self._tags,
                        opts=self._child,
                    )
                )
                self.ready.append(
                    aws.vpc.SecurityGroupIngressRule(
                        f"{self._name}-in-{rule}",
                        security_group_id=group_id,
                        referenced_security_group_id=source.id,
                        ip_protocol="tcp",
                        from_port=HTTPS,
                        to_port=HTTPS,
                        description=f"slotguard {self._name} {role} to {slug}",
                        tags=self._tags,
                        opts=self._child,
                    )
                )

    def _nat_egress(self, args: NetworkArgs) -> None:
        # An existing VPC without endpoints reaches AWS APIs through its NAT gateway: HTTPS
        # egress only, never ingress.
        for role, source in self._api_callers:
            rule = aws.vpc.SecurityGroupEgressRule(
                f"{self._name}-out-{role}-https",
                security_group_id=source.id,
                cidr_ipv4=ANYWHERE,
                ip_protocol="tcp",
                from_port=HTTPS,
                to_port=HTTPS,
                description=f"{role} to AWS APIs through the VPC's NAT",
                tags=self._tags,
                opts=self._child,
            )
            self.ready.append(rule)


def read_existing_vpc(
    s: NetworkSettings, pooler_kind: str, *, parent: pulumi.Resource
) -> ExistingVpc:
    """Look the existing VPC up (at preview too): DNS attributes, route tables, endpoints.

    Private DNS of interface endpoints needs both `enableDnsSupport` and `enableDnsHostnames`
    (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html);
    the functions resolve the database and pooler names through the VPC's resolver either way.
    """
    assert s.vpc_id is not None
    opts = pulumi.InvokeOptions(parent=parent)
    vpc = aws.ec2.get_vpc(id=s.vpc_id, opts=opts)
    problems: list[str] = []
    if not vpc.enable_dns_support:
        problems.append(
            f"network.vpc_id: {s.vpc_id} has DNS resolution (enableDnsSupport) turned off; the "
            "functions cannot resolve the database or pooler names. Turn it on "
            f"(aws ec2 modify-vpc-attribute --vpc-id {s.vpc_id} --enable-dns-support)"
        )
    if s.vpc_endpoints and not vpc.enable_dns_hostnames:
        problems.append(
            f"network.vpc_id: {s.vpc_id} has DNS hostnames (enableDnsHostnames) turned off; "
            "interface endpoints' private DNS needs it. Turn it on (aws ec2 modify-vpc-attribute "
            f"--vpc-id {s.vpc_id} --enable-dns-hostnames) or set network.vpc_endpoints: false "
            "with a NAT gateway"
        )
    if problems:
        raise SettingsError(problems)
    if not s.vpc_endpoints:
        return ExistingVpc(route_table_ids=[])
    # A subnet without an explicit association uses the VPC's main route table
    # (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-route-tables.html).
    tables: list[str] = []
    for subnet_id in s.subnet_ids:
        explicit = aws.ec2.get_route_tables(
            vpc_id=s.vpc_id,
            filters=[{"name": "association.subnet-id", "values": [subnet_id]}],
            opts=opts,
        ).ids
        for table in explicit or [vpc.main_route_table_id]:
            if table not in tables:
                tables.append(table)
    region = aws.get_region(opts=opts).region
    endpoints: dict[str, tuple[str, list[str]]] = {}
    for service in interface_endpoints(pooler_kind):
        found = _find_endpoint(s.vpc_id, _service_name(region, service), "Interface", parent)
        if found is not None:
            endpoints[service] = (found.id, list(found.security_group_ids))
    existing = ExistingVpc(route_table_ids=tables, endpoints=endpoints)
    if needs_s3_gateway(pooler_kind):
        s3 = _find_endpoint(s.vpc_id, _service_name(region, "s3"), "Gateway", parent)
        if s3 is not None:
            served = set(s3.route_table_ids)
            existing = ExistingVpc(
                route_table_ids=tables,
                endpoints=endpoints,
                s3_prefix_list_id=s3.prefix_list_id,
                s3_endpoint_id=s3.id,
                s3_missing_route_tables=[t for t in tables if t not in served],
            )
    return existing
