"""The network: private subnets, VPC endpoints and the security-group chain.

Functions may reach only the pooler, the pooler only the database, and the bootstrap function alone
the database directly. Every rule references a security group, never a CIDR, so nothing is open to
0.0.0.0/0; the only exception is HTTPS *egress* to AWS APIs through an existing VPC's NAT when
the stack creates no VPC endpoints.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import NetworkSettings, SettingsError

HTTPS = 443
ANYWHERE = "0.0.0.0/0"
# The AWS APIs the functions and pooler tasks call from private subnets: secrets, logs and
# metrics, and image pulls (ECR API and registry; image layers come from S3).
INTERFACE_ENDPOINTS = ("secretsmanager", "logs", "monitoring", "ecr.api", "ecr.dkr")
# Subnets of a new VPC: one /20 per AZ, 4,096 addresses each, room for Lambda ENIs and tasks.
SUBNET_PREFIX = 20


@dataclass
class NetworkArgs:
    settings: NetworkSettings
    database_port: int
    pooler_port: int
    pooler_kind: str
    tags: dict[str, str]


def _service_name(region: str, service: str) -> str:
    return f"com.amazonaws.{region}.{service}"


def _zone(names: list[str], index: int) -> str:
    if index >= len(names):
        raise SettingsError(
            [
                f"network.availability_zones: the region has {len(names)} available AZs, "
                f"fewer than the {index + 1} asked for"
            ]
        )
    return names[index]


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
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOptions(parent=self)
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
                availability_zone=zones.names.apply(functools.partial(_zone, index=index)),
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
        if not s.vpc_endpoints:
            return []
        # The S3 gateway endpoint routes through the subnets' own route tables.
        return [
            aws.ec2.get_route_table_output(
                subnet_id=subnet_id, opts=pulumi.InvokeOptions(parent=self)
            ).route_table_id
            for subnet_id in s.subnet_ids
        ]

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
        target: aws.ec2.SecurityGroup,
        port: int,
        description: str,
    ) -> None:
        """One flow source -> target: egress on the source and ingress on the target."""
        aws.vpc.SecurityGroupEgressRule(
            f"{self._name}-out-{rule}",
            security_group_id=source.id,
            referenced_security_group_id=target.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=description,
            tags=self._tags,
            opts=self._child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-in-{rule}",
            security_group_id=target.id,
            referenced_security_group_id=source.id,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=description,
            tags=self._tags,
            opts=self._child,
        )

    def _security_groups(self, args: NetworkArgs) -> None:
        functions = self._group("functions", "Lambda functions: out to the pooler only")
        bootstrap = self._group("bootstrap", "Bootstrap function: out to the database")
        pooler = self._group("pooler", f"{args.pooler_kind}: from functions, to the database")
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
        self._allow("pooler-db", pooler, database, args.database_port, "pooler to the database")
        self._allow(
            "bootstrap-db", bootstrap, database, args.database_port, "bootstrap to the database"
        )
        self._api_callers = [("functions", functions), ("bootstrap", bootstrap)]
        if args.pooler_kind == "pgbouncer":
            self._api_callers.append(("pooler", pooler))  # image pulls, secrets, logs, metrics
        self._pooler_group = pooler
        self.functions_sg_id = functions.id
        self.bootstrap_sg_id = bootstrap.id
        self.pooler_sg_id = pooler.id
        self.pooler_lb_sg_id = lb.id if lb is not None else None
        self.database_sg_id = database.id

    # -- reaching AWS APIs -----------------------------------------------------------------

    def _endpoints(self, args: NetworkArgs, route_tables: list[pulumi.Input[str]]) -> None:
        name, tags, child = self._name, self._tags, self._child
        endpoints = self._group("endpoints", "VPC interface endpoints: HTTPS from the stack")
        for role, source in self._api_callers:
            self._allow(f"{role}-endpoints", source, endpoints, HTTPS, f"{role} to AWS APIs")
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-vpce-{service.replace('.', '-')}",
                vpc_id=self.vpc_id,
                service_name=region.apply(functools.partial(_service_name, service=service)),
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.subnet_ids,
                security_group_ids=[endpoints.id],
                tags={**tags, "Name": f"{name}-vpce-{service}"},
                opts=child,
            )
        s3 = aws.ec2.VpcEndpoint(
            f"{name}-vpce-s3",
            vpc_id=self.vpc_id,
            service_name=region.apply(functools.partial(_service_name, service="s3")),
            vpc_endpoint_type="Gateway",
            route_table_ids=route_tables,
            tags={**tags, "Name": f"{name}-vpce-s3"},
            opts=child,
        )
        if args.pooler_kind == "pgbouncer":
            # ECR serves image layers from S3, reached through the gateway endpoint.
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-out-pooler-s3",
                security_group_id=self._pooler_group.id,
                prefix_list_id=s3.prefix_list_id,
                ip_protocol="tcp",
                from_port=HTTPS,
                to_port=HTTPS,
                description="PgBouncer tasks to S3 (image layers)",
                tags=tags,
                opts=child,
            )

    def _nat_egress(self, args: NetworkArgs) -> None:
        # An existing VPC without endpoints reaches AWS APIs through its NAT gateway: HTTPS
        # egress only, never ingress.
        for role, source in self._api_callers:
            aws.vpc.SecurityGroupEgressRule(
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
