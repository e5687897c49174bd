"""Every precondition of a successful `pulumi up`, checked read-only against account and machine.

Each check returns rows (pass / fail / skip) naming what it found and, on failure, the setting or
the action that fixes it. Nothing here creates or changes anything in the account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from infra.aws_constraints import enum, fargate_pair_problem
from infra.budget import LAMBDA_UNRESERVED_MINIMUM, Budget
from infra.functions import function_name
from infra.network import interface_endpoints
from infra.settings import RDS_PROXY_DOC, RDS_PROXY_POSTGRES_MAJORS, StackSettings
from slotguard.aws.checks import Check, CheckFn, failed, passed, run_checks, skipped
from slotguard.aws.preflight_database import existing_database_checks
from slotguard.aws.tools import (
    IMAGE_PLATFORM,
    PULUMI_MIN_VERSION,
    Tools,
    buildx_platforms,
    parse_version,
)

ENGINE = "postgres"
# Regions where Linux on Fargate runs only in some AZs (by AZ ID), from
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/AWS_Fargate-Regions.html
FARGATE_AZ_IDS: dict[str, frozenset[str]] = {
    "us-west-1": frozenset({"usw1-az1", "usw1-az3"}),
    "ap-northeast-1": frozenset({"apne1-az1", "apne1-az2", "apne1-az4"}),
}
# Route targets that can carry a private subnet's 0.0.0.0/0 traffic on to AWS's public APIs:
# a NAT gateway; a transit gateway or Cloud WAN core network (a shared egress VPC behind it); a
# NAT instance or appliance (InstanceId, or its NetworkInterfaceId); a virtual private gateway
# (egress through the corporate network). Not a VPC peering connection: peering does not
# support edge-to-edge routing through the peer's NAT or gateway ("VPC peering limitations",
# https://docs.aws.amazon.com/vpc/latest/peering/vpc-peering-basics.html). Not an internet
# gateway: a function's ENI has no public address, so a public subnet gives it no internet
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc-internet.html).
EGRESS_TARGETS = (
    "NatGatewayId",
    "TransitGatewayId",
    "CoreNetworkArn",
    "InstanceId",
    "NetworkInterfaceId",
)
VIRTUAL_PRIVATE_GATEWAY = "vgw-"

ClientFactory = Callable[[str], Any]


@dataclass(frozen=True)
class Zone:
    name: str
    zone_id: str


@dataclass
class Preflight:
    """One stack's preflight: settings and budget, AWS clients, the machine's tools."""

    settings: StackSettings
    budget: Budget
    client: ClientFactory
    region: str | None
    tools: Tools = field(default_factory=Tools)
    # The stack is already deployed: its fixed names are its own, not an earlier stack's.
    deployed: bool = False
    prebuilt_image: str | None = None
    ca_bundle: Callable[[], str] | None = None
    _zones: list[Zone] | None = None
    _offered: dict[str, list[str]] | None = None

    def run(self) -> list[Check]:
        return run_checks(self.named_checks())

    def named_checks(self) -> list[tuple[str, CheckFn]]:
        return [
            ("aws credentials", self.credentials),
            ("pulumi cli", self.pulumi_cli),
            ("lambda concurrency", self.lambda_concurrency),
            ("service quotas", self.service_quotas),
            ("name collisions", self.name_collisions),
            ("rds engine version", self.rds_engine),
            ("rds proxy engine", self.rds_proxy_engine),
            ("fargate", self.fargate),
            ("existing vpc", self.existing_vpc),
            ("vpc endpoint services", self.endpoint_services),
            ("pooler image", self.image_build),
            ("rds ca bundle", self.rds_ca_bundle),
            ("existing database", self.existing_database),
        ]

    # -- account and machine ---------------------------------------------------------------

    def credentials(self) -> Iterator[Check]:
        if not self.region:
            yield failed(
                "aws region",
                "no region: the stack sets no aws:region and none is configured",
                f"pulumi config set aws:region <region> --stack {self.settings.stack}",
            )
            return
        try:
            identity = self.client("sts").get_caller_identity()
        except (NoCredentialsError, NoRegionError) as error:
            yield failed(
                "aws credentials",
                f"no usable credentials ({error})",
                "configure credentials: `aws configure`, AWS_PROFILE, or `aws sso login`",
            )
            return
        yield passed(
            "aws credentials",
            f"account {identity['Account']} as {identity['Arn']}, region {self.region}",
        )

    def pulumi_cli(self) -> Iterator[Check]:
        wanted = ".".join(map(str, PULUMI_MIN_VERSION))
        if self.tools.which("pulumi") is None:
            yield failed(
                "pulumi cli",
                "`pulumi` is not on PATH",
                f"install the Pulumi CLI {wanted} or later: https://www.pulumi.com/docs/install/",
            )
            return
        result = self.tools.run(["pulumi", "version"])
        version = parse_version(result.stdout) if result.returncode == 0 else None
        if version is None:
            yield failed(
                "pulumi cli",
                f"`pulumi version` answered {(result.stdout or result.stderr).strip()[:80]!r}",
                "reinstall the Pulumi CLI: https://www.pulumi.com/docs/install/",
            )
        elif version < PULUMI_MIN_VERSION:
            yield failed(
                "pulumi cli",
                f"pulumi {'.'.join(map(str, version))}",
                f"upgrade the Pulumi CLI to {wanted} or later (`pulumi self-update` or reinstall)",
            )
        else:
            yield passed("pulumi cli", f"pulumi {'.'.join(map(str, version))} (>= {wanted})")

    # -- Lambda ----------------------------------------------------------------------------

    def _stack_functions(self) -> dict[str, int | None]:
        """Lambda name -> reserved concurrency (None: unreserved), for every function."""
        stack = self.settings.stack
        names = {
            function_name(stack, key): fn.reserved_concurrency
            for key, fn in self.budget.functions.items()
        }
        names[function_name(stack, "bootstrap")] = self.budget.bootstrap_reserved_concurrency
        return names

    def lambda_concurrency(self) -> Iterator[Check]:
        """Reservations against what the account has left, other stacks' reservations counted.

        GetAccountSettings answers ConcurrentExecutions (the quota in force, where Service
        Quotas may still show the default) and UnreservedConcurrentExecutions (the quota less
        every reservation in the region, other stacks' included)
        (https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html).
        """
        lam = self.client("lambda")
        limit = lam.get_account_settings()["AccountLimit"]
        quota = int(limit["ConcurrentExecutions"])
        unreserved = int(limit["UnreservedConcurrentExecutions"])
        already = 0
        for name in self._stack_functions():
            try:
                response = lam.get_function_concurrency(FunctionName=name)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                continue
            already += int(response.get("ReservedConcurrentExecutions") or 0)
        total = self.budget.reserved_concurrency_total
        others = quota - unreserved - already
        left = unreserved + already - total
        found = (
            f"account quota {quota}, {others} reserved by other functions, unreserved now "
            f"{unreserved}; the stack reserves {total} (functions + bootstrap), {already} of it "
            f"already in place; leaves {left}"
        )
        if total == 0:
            yield passed(
                "lambda unreserved concurrency",
                f"account quota {quota}; the stack reserves nothing: its functions share the "
                f"{unreserved + already} unreserved executions with the region's other functions",
            )
        elif left >= LAMBDA_UNRESERVED_MINIMUM:
            yield passed("lambda unreserved concurrency", found)
        else:
            yield failed(
                "lambda unreserved concurrency",
                found,
                f"Lambda keeps {LAMBDA_UNRESERVED_MINIMUM} unreserved: lower "
                "functions.<name>.reserved_concurrency by "
                f"{LAMBDA_UNRESERVED_MINIMUM - left}, leave functions unreserved "
                "(reserved_concurrency: null), or raise the 'Concurrent executions' quota in "
                "Service Quotas",
            )
        setting = self.settings.lambda_concurrency_quota
        if setting <= quota:
            yield passed("lambda_concurrency_quota", f"setting {setting} <= account quota {quota}")
        elif total == 0:
            # Unreserved functions' clients are bounded by the setting: a larger one only
            # over-sizes the pooler's client capacity, it hides nothing.
            yield passed(
                "lambda_concurrency_quota",
                f"setting {setting} above the account's {quota}: the pooler is sized for more "
                "clients than the account can run",
            )
        else:
            yield failed(
                "lambda_concurrency_quota",
                f"the stack assumes a quota of {setting}, the account has {quota}",
                f"set lambda_concurrency_quota: {quota} (or get the quota raised first)",
            )

    def service_quotas(self) -> Iterator[Check]:
        """The preview reads Lambda's quota from Service Quotas (infra/account.py)."""
        from infra.account import (  # noqa: PLC0415 - imports Pulumi, only for this check
            LAMBDA_CONCURRENCY_QUOTA_CODE,
            LAMBDA_SERVICE_CODE,
        )

        try:
            quota = self.client("service-quotas").get_service_quota(
                ServiceCode=LAMBDA_SERVICE_CODE, QuotaCode=LAMBDA_CONCURRENCY_QUOTA_CODE
            )["Quota"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code not in ("AccessDeniedException", "AccessDenied"):
                raise
            yield failed(
                "service quotas",
                f"GetServiceQuota {LAMBDA_SERVICE_CODE}/{LAMBDA_CONCURRENCY_QUOTA_CODE} was "
                "refused: `pulumi preview` reads the Lambda quota there and stops without it",
                "allow servicequotas:GetServiceQuota to the identity that runs pulumi",
            )
            return
        yield passed(
            "service quotas",
            f"servicequotas:GetServiceQuota allowed (Lambda concurrent executions "
            f"{quota.get('Value', '?'):g})"
            if isinstance(quota.get("Value"), float | int)
            else "servicequotas:GetServiceQuota allowed",
        )

    # -- names an earlier stack may have left ------------------------------------------------

    def fixed_names(self) -> dict[str, list[str]]:
        """The names the program gives its resources itself (not generated by Pulumi).

        Layers are left out: publishing a layer name that exists adds a version to it
        (https://docs.aws.amazon.com/lambda/latest/api/API_PublishLayerVersion.html).
        """
        from infra.alarm_rules import alarm_rules  # noqa: PLC0415 - only for this check

        stack = self.settings.stack
        functions = sorted(self._stack_functions())
        alarms: list[str] = []
        for rule in alarm_rules(self.budget):
            if rule.metric.startswith("function_"):
                suffix = rule.key.removeprefix("function-")
                alarms += [
                    f"slotguard-{stack}-{key}-{suffix}" for key in sorted(self.budget.functions)
                ]
            else:
                alarms.append(f"slotguard-{stack}-{rule.key}")
        return {
            "functions": functions,
            "log groups": [f"/aws/lambda/{name}" for name in functions],
            "alarms": alarms,
            "dashboard": [f"slotguard-{stack}"],
        }

    def name_collisions(self) -> Iterator[Check]:
        """Resources of an earlier stack under this stack's fixed names.

        Lambda refuses a function name in use (CreateFunction: ResourceConflictException) and
        CloudWatch Logs a log group that exists (CreateLogGroup: ResourceAlreadyExistsException);
        an alarm or dashboard of the same name is silently overwritten (PutMetricAlarm,
        PutDashboard) and then deleted with this stack.
        """
        if self.deployed:
            yield skipped("name collisions", "the stack is deployed: its fixed names are its own")
            return
        wanted = self.fixed_names()
        found: dict[str, list[str]] = {}
        lam = self.client("lambda")
        for name in wanted["functions"]:
            try:
                lam.get_function(FunctionName=name)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                continue
            found.setdefault("functions", []).append(name)
        prefix = f"/aws/lambda/slotguard-{self.settings.stack}-"
        paginator = self.client("logs").get_paginator("describe_log_groups")
        groups = {
            g["logGroupName"]
            for page in paginator.paginate(logGroupNamePrefix=prefix)
            for g in page.get("logGroups", [])
        }
        found["log groups"] = [n for n in wanted["log groups"] if n in groups]
        cloudwatch = self.client("cloudwatch")
        alarms = {
            a["AlarmName"]
            for page in cloudwatch.get_paginator("describe_alarms").paginate(
                AlarmNamePrefix=f"slotguard-{self.settings.stack}-"
            )
            for a in page.get("MetricAlarms", [])
        }
        found["alarms"] = [n for n in wanted["alarms"] if n in alarms]
        dashboards = {
            d["DashboardName"]
            for d in cloudwatch.list_dashboards(DashboardNamePrefix=wanted["dashboard"][0]).get(
                "DashboardEntries", []
            )
        }
        found["dashboard"] = [n for n in wanted["dashboard"] if n in dashboards]
        found = {kind: names for kind, names in found.items() if names}
        if not found:
            yield passed(
                "name collisions",
                f"none of the stack's {sum(map(len, wanted.values()))} fixed names is taken",
            )
            return
        yield failed(
            "name collisions",
            "; ".join(f"{kind}: {', '.join(names)}" for kind, names in found.items()),
            "an earlier stack left them: delete them (aws lambda delete-function, aws logs "
            "delete-log-group, aws cloudwatch delete-alarms / delete-dashboards) or deploy under "
            "another stack name; if this stack is deployed, run preflight with --deployed",
        )

    # -- RDS -------------------------------------------------------------------------------

    def _resolve_engine(self) -> tuple[str | None, list[str]]:
        """The version RDS offers new instances for the setting (a full version or a prefix)."""
        wanted = self.settings.database.engine_version
        offered: list[str] = []
        paginator = self.client("rds").get_paginator("describe_db_engine_versions")
        for page in paginator.paginate(Engine=ENGINE):
            for version in page.get("DBEngineVersions", []):
                # Without IncludeAll only versions offered for new instances are listed; a
                # Status other than `available` (e.g. `deprecated`) is not offered either.
                if version.get("Status", "available") == "available":
                    offered.append(version["EngineVersion"])
        return match_engine_version(wanted, offered), offered

    def existing_database(self) -> Iterator[Check]:
        yield from existing_database_checks(self.settings, self.budget, self.client)

    def rds_engine(self) -> Iterator[Check]:
        if self.settings.database.kind != "rds-instance":
            # Aurora's version and class are checked by the program's look-up at preview;
            # an existing database's version is read from the database itself.
            yield skipped("rds engine version", f"database.kind is {self.settings.database.kind}")
            return
        wanted = self.settings.database.engine_version
        version, offered = self._resolve_engine()
        if version is None:
            majors = sorted({v.split(".")[0] for v in offered}, key=int)
            major = wanted.split(".")[0]
            near = _sorted(v for v in offered if v.split(".")[0] == major)[-3:]
            same = f"; newest {major}.x: {', '.join(near)}" if near else ""
            yield failed(
                "rds engine version",
                f"postgres {wanted} is not offered for new instances in {self.region} "
                f"(offered majors: {', '.join(majors) or '-'}{same})",
                "set database.engine_version to an offered major version (RDS takes its "
                "newest minor)",
            )
            return
        shown = version if version == wanted else f"{wanted} -> {version}"
        yield passed("rds engine version", f"postgres {shown} offered for new instances")
        yield from self._orderable(version)

    def _orderable(self, version: str) -> Iterator[Check]:
        db = self.settings.database
        options: list[dict[str, Any]] = []
        paginator = self.client("rds").get_paginator("describe_orderable_db_instance_options")
        for page in paginator.paginate(
            Engine=ENGINE, EngineVersion=version, DBInstanceClass=db.instance_class
        ):
            options += page.get("OrderableDBInstanceOptions", [])
        if not options:
            yield failed(
                "rds instance class",
                f"{db.instance_class} is not orderable for postgres {version} in {self.region}",
                "set database.instance_class to a class RDS offers for this version "
                "(`aws rds describe-orderable-db-instance-options --engine postgres`)",
            )
            return
        offered_zones = {az["Name"] for o in options for az in o.get("AvailabilityZones", [])}
        stack_zones = [z.name for z in self.zones()]
        missing = [z for z in stack_zones if z not in offered_zones]
        if missing:
            yield failed(
                "rds instance class",
                f"{db.instance_class} is not offered in {', '.join(missing)} "
                f"(stack AZs: {', '.join(stack_zones)})",
                "choose another database.instance_class, or subnets (network.subnet_ids) in "
                f"AZs that offer it: {', '.join(sorted(offered_zones)) or '-'}",
            )
        else:
            yield passed(
                "rds instance class",
                f"{db.instance_class} orderable for {version} in {', '.join(stack_zones)}",
            )
        if not self.settings.multi_az:
            yield skipped("rds multi-az", "not asked (database.multi_az off for this stack)")
        elif any(o.get("MultiAZCapable") for o in options):
            yield passed("rds multi-az", f"{db.instance_class} is Multi-AZ capable")
        else:
            yield failed(
                "rds multi-az",
                f"{db.instance_class} with postgres {version} is not Multi-AZ capable here",
                "set database.multi_az: false or choose a Multi-AZ capable instance_class",
            )

    def rds_proxy_engine(self) -> Iterator[Check]:
        if self.settings.pooler.kind != "rds-proxy":
            yield skipped("rds proxy engine", "pooler.kind is pgbouncer")
            return
        major = int(self.settings.database.engine_version.split(".")[0])
        if major in RDS_PROXY_POSTGRES_MAJORS:
            yield passed("rds proxy engine", f"RDS Proxy supports RDS for PostgreSQL {major}")
        else:
            yield failed(
                "rds proxy engine",
                f"RDS for PostgreSQL {major} is not among the versions RDS Proxy supports "
                f"({', '.join(map(str, sorted(RDS_PROXY_POSTGRES_MAJORS)))}; {RDS_PROXY_DOC})",
                "set database.engine_version to a supported major, or pooler.kind: pgbouncer",
            )

    # -- Fargate ---------------------------------------------------------------------------

    def zones(self) -> list[Zone]:
        """The AZs the stack's subnets are (or will be) in."""
        if self._zones is not None:
            return self._zones
        ec2 = self.client("ec2")
        net = self.settings.network
        if net.mode == "existing":
            subnets = ec2.describe_subnets(SubnetIds=list(net.subnet_ids))["Subnets"]
            zones = {Zone(s["AvailabilityZone"], s.get("AvailabilityZoneId", "")) for s in subnets}
            self._zones = sorted(zones, key=lambda z: z.name)
        else:
            available = ec2.describe_availability_zones(
                Filters=[{"Name": "state", "Values": ["available"]}]
            )["AvailabilityZones"]
            ordered = sorted(
                (Zone(z["ZoneName"], z.get("ZoneId", "")) for z in available),
                key=lambda z: z.name,
            )
            # The program takes the first AZs where every interface endpoint is offered
            # (infra/network.py usable_zones); fewer than asked is the endpoint check's failure.
            offered = self.endpoint_zones() if net.vpc_endpoints else {}
            fit = [z for z in ordered if all(z.name in zs for zs in offered.values())]
            self._zones = fit[: net.availability_zones]
        return self._zones

    def endpoint_zones(self) -> dict[str, list[str]]:
        """Interface endpoint service -> the AZs it is offered in (DescribeVpcEndpointServices)."""
        if self._offered is None:
            services = interface_endpoints(self.settings.pooler.kind)
            names = [f"com.amazonaws.{self.region}.{s}" for s in services]
            details = self.client("ec2").describe_vpc_endpoint_services(ServiceNames=names)
            by_name = {d["ServiceName"]: d for d in details.get("ServiceDetails", [])}
            self._offered = {
                s: list(by_name.get(n, {}).get("AvailabilityZones", []))
                for s, n in zip(services, names, strict=True)
            }
        return self._offered

    def endpoint_services(self) -> Iterator[Check]:
        """Every interface endpoint the stack creates is offered in each of its AZs."""
        net = self.settings.network
        if not net.vpc_endpoints:
            yield skipped("vpc endpoint services", "network.vpc_endpoints off: none created")
            return
        offered = self.endpoint_zones()
        zones = [z.name for z in self.zones()]
        gaps = {s: [z for z in zones if z not in offered_in] for s, offered_in in offered.items()}
        gaps = {s: z for s, z in gaps.items() if z}
        short = net.mode == "new-vpc" and len(zones) < net.availability_zones
        if not gaps and not short:
            yield passed(
                "vpc endpoint services",
                f"{', '.join(offered)} offered in {', '.join(zones)}",
            )
            return
        lacking = "; ".join(f"{s} not offered in {', '.join(z)}" for s, z in gaps.items())
        if short:
            yield failed(
                "vpc endpoint services",
                f"only {len(zones)} AZs offer every endpoint ({', '.join(zones) or 'none'}); "
                f"network.availability_zones is {net.availability_zones}",
                f"lower network.availability_zones to {len(zones)} or fewer",
            )
        else:
            yield failed(
                "vpc endpoint services",
                lacking,
                "use subnets (network.subnet_ids) in AZs that offer every endpoint: "
                + ", ".join(f"{s}: {', '.join(sorted(z)) or '-'}" for s, z in offered.items()),
            )

    def fargate(self) -> Iterator[Check]:
        if self.settings.pooler.kind != "pgbouncer":
            yield skipped("fargate", "pooler.kind is rds-proxy: no Fargate tasks")
            return
        pb = self.settings.pooler.pgbouncer
        problem = fargate_pair_problem(pb.cpu, pb.memory_mb)
        if problem is None:
            yield passed("fargate task size", f"{pb.cpu} CPU units / {pb.memory_mb} MiB")
        else:
            setting, _, text = problem.partition(": ")
            yield failed("fargate task size", text, f"change {setting}")
        if "ARM64" not in enum("ecs", "CPUArchitecture"):
            yield failed("fargate arm64", "ECS does not list ARM64", "upgrade botocore")
            return
        allowed = FARGATE_AZ_IDS.get(self.region or "")
        zones = self.zones()
        if allowed is None:
            yield passed(
                "fargate arm64",
                f"Linux/ARM64 Fargate tasks in {self.region}: no AZ restriction listed",
            )
            return
        outside = [f"{z.name} ({z.zone_id})" for z in zones if z.zone_id not in allowed]
        if outside:
            yield failed(
                "fargate arm64",
                f"Fargate runs in {self.region} only in AZ IDs {', '.join(sorted(allowed))}; "
                f"the stack uses {', '.join(outside)}",
                "use subnets (network.subnet_ids, mode existing) in the supported AZ IDs",
            )
        else:
            yield passed("fargate arm64", f"AZs {', '.join(z.zone_id for z in zones)} supported")

    # -- an existing VPC -------------------------------------------------------------------

    def existing_vpc(self) -> Iterator[Check]:
        net = self.settings.network
        if net.mode != "existing":
            yield skipped("existing vpc", "network.mode is new-vpc: the stack builds its own")
            return
        ec2 = self.client("ec2")
        vpc_id = str(net.vpc_id)
        yield from self._vpc_dns(ec2, vpc_id)
        subnets = self._subnets(ec2, vpc_id)
        yield subnets[0]
        if subnets[0].failed:
            return
        tables = self._route_tables(ec2, vpc_id)
        yield from self._routes(tables)
        yield from self._endpoints(ec2, vpc_id, tables)

    def _vpc_dns(self, ec2: Any, vpc_id: str) -> Iterator[Check]:
        support = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsSupport")
        hostnames = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")
        dns_support = bool(support["EnableDnsSupport"]["Value"])
        dns_hostnames = bool(hostnames["EnableDnsHostnames"]["Value"])
        found = f"enableDnsSupport {dns_support}, enableDnsHostnames {dns_hostnames}"
        # Private DNS of interface endpoints needs both attributes true (CreateVpcEndpoint,
        # PrivateDnsEnabled); the database and pooler names need the Amazon DNS server anyway.
        off = [] if dns_support else ["enable-dns-support"]
        if net_endpoints(self) and not dns_hostnames:
            off.append("enable-dns-hostnames")
        if off:
            commands = " and ".join(
                f"aws ec2 modify-vpc-attribute --vpc-id {vpc_id} --{flag}" for flag in off
            )
            yield failed("vpc dns", found, commands)
        else:
            yield passed("vpc dns", found)

    def _subnets(self, ec2: Any, vpc_id: str) -> list[Check]:
        wanted = list(self.settings.network.subnet_ids)
        try:
            subnets = ec2.describe_subnets(SubnetIds=wanted)["Subnets"]
        except ClientError as error:
            if "NotFound" not in error.response.get("Error", {}).get("Code", ""):
                raise
            return [
                failed(
                    "subnets",
                    error.response["Error"].get("Message", "a subnet does not exist"),
                    "fix network.subnet_ids",
                )
            ]
        elsewhere = [s["SubnetId"] for s in subnets if s["VpcId"] != vpc_id]
        zones = sorted({s["AvailabilityZone"] for s in subnets})
        found = ", ".join(f"{s['SubnetId']} in {s['AvailabilityZone']}" for s in subnets)
        if elsewhere:
            return [failed("subnets", found, f"{', '.join(elsewhere)} not in {vpc_id}")]
        if len(zones) < 2:
            return [
                failed(
                    "subnets",
                    found,
                    "network.subnet_ids must span at least two AZs (RDS subnet groups and the "
                    "pooler need two)",
                )
            ]
        return [passed("subnets", f"{found} ({len(zones)} AZs)")]

    def _route_tables(self, ec2: Any, vpc_id: str) -> dict[str, tuple[dict[str, Any], bool]]:
        """subnet -> (its route table, whether the association is explicit)."""
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "RouteTables"
        ]
        main = next(
            (t for t in tables if any(a.get("Main") for a in t.get("Associations", []))), None
        )
        result: dict[str, tuple[dict[str, Any], bool]] = {}
        for subnet in self.settings.network.subnet_ids:
            explicit = next(
                (
                    t
                    for t in tables
                    if any(a.get("SubnetId") == subnet for a in t.get("Associations", []))
                ),
                None,
            )
            if explicit is not None:
                result[subnet] = (explicit, True)
            elif main is not None:
                # A subnet without an explicit association uses the VPC's main route table.
                result[subnet] = (main, False)
        return result

    def _routes(self, tables: dict[str, tuple[dict[str, Any], bool]]) -> Iterator[Check]:
        # A subnet with no explicit association uses the main route table ("Subnet route
        # tables", https://docs.aws.amazon.com/vpc/latest/userguide/subnet-route-tables.html).
        # The program looks each subnet's explicit table up with the plural `get_route_tables`
        # (an empty list, not an error, when none matches: terraform-provider-aws
        # internal/service/ec2/vpc_route_tables_data_source.go) and falls back to the VPC's
        # main_route_table_id, so an implicit association is fine either way.
        found = ", ".join(
            f"{s} -> {t['RouteTableId']}{'' if explicit else ' (main, implicit)'}"
            for s, (t, explicit) in tables.items()
        )
        missing = [s for s in self.settings.network.subnet_ids if s not in tables]
        if missing:
            yield failed(
                "route tables",
                f"{found or 'none'}; no route table (explicit or main) for {', '.join(missing)}",
                "give the VPC a main route table or associate those subnets with one",
            )
        else:
            yield passed("route tables", found)

    def _endpoints(
        self, ec2: Any, vpc_id: str, tables: dict[str, tuple[dict[str, Any], bool]]
    ) -> Iterator[Check]:
        endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "VpcEndpoints"
        ]
        region = self.region or ""
        existing = {
            e["ServiceName"].removeprefix(f"com.amazonaws.{region}."): e
            for e in endpoints
            if e.get("VpcEndpointType") == "Interface"
            and e.get("State", "available").lower() == "available"
        }
        needed = interface_endpoints(self.settings.pooler.kind)
        ours = [s for s in needed if s in existing]
        private_dns = [s for s in ours if existing[s].get("PrivateDnsEnabled")]
        no_dns = [s for s in ours if s not in private_dns]
        found = "existing interface endpoints: " + (
            ", ".join(
                f"{s} ({existing[s]['VpcEndpointId']}"
                f"{'' if s in private_dns else ', private DNS off'})"
                for s in ours
            )
            or "none"
        )
        if net_endpoints(self):
            # The program reuses an endpoint the VPC already has for a service (a second one
            # with private DNS would be refused) and admits the stack's groups to it. Its calls
            # reach it only through private DNS: without it they resolve to the public endpoint.
            if no_dns:
                commands = " and ".join(
                    "aws ec2 modify-vpc-endpoint --vpc-endpoint-id "
                    f"{existing[s]['VpcEndpointId']} --private-dns-enabled"
                    for s in no_dns
                )
                yield failed(
                    "vpc endpoints",
                    found + "; the stack reuses them, but calls reach an endpoint only through "
                    "its private DNS",
                    f"turn private DNS on: {commands}",
                )
            else:
                made = [s for s in needed if s not in ours]
                yield passed(
                    "vpc endpoints",
                    found
                    + (f"; the stack reuses {', '.join(ours)}" if ours else "")
                    + (f"; it creates {', '.join(made)}" if made else ""),
                )
            yield skipped("nat egress", "network.vpc_endpoints: the stack needs no NAT")
            return
        yield passed(
            "vpc endpoints",
            found + ("; the stack reuses them" if private_dns else "; none reused"),
        )
        missing = [s for s in needed if s not in private_dns]
        if not missing:
            yield passed("nat egress", "every API the stack calls has a private-DNS endpoint")
            return
        no_nat = [s for s, (table, _) in tables.items() if egress_route(table) is None]
        if no_nat:
            yield failed(
                "nat egress",
                f"{', '.join(no_nat)} have no 0.0.0.0/0 route to a NAT (gateway, transit "
                f"gateway, NAT instance or virtual private gateway), and {', '.join(missing)} "
                "have no endpoint",
                "add a NAT route to those subnets' route tables, or set network.vpc_endpoints: "
                "true",
            )
        else:
            via = sorted({str(egress_route(t)) for t, _ in tables.values()})
            yield passed(
                "nat egress", f"routes through {', '.join(via)} reach {', '.join(missing)}"
            )

    # -- the artifacts ---------------------------------------------------------------------

    def image_build(self) -> Iterator[Check]:
        if self.settings.pooler.kind != "pgbouncer":
            yield skipped("pooler image", "pooler.kind is rds-proxy: no image")
            return
        if self.prebuilt_image:
            yield passed("pooler image", f"prebuilt image {self.prebuilt_image} (no build here)")
            return
        hint = (
            "or give a prebuilt image: pulumi config set pgbouncer:image <uri> --stack "
            f"{self.settings.stack}"
        )
        if self.tools.which("docker") is None:
            yield failed("pooler image", "`docker` is not on PATH", f"install Docker, {hint}")
            return
        result = self.tools.run(["docker", "buildx", "inspect"])
        if result.returncode != 0:
            yield failed(
                "pooler image",
                f"`docker buildx inspect` failed: {result.stderr.strip()[:120]}",
                f"install the buildx plugin (BuildKit) and start Docker, {hint}",
            )
            return
        platforms = buildx_platforms(result.stdout)
        if IMAGE_PLATFORM in platforms:
            yield passed("pooler image", f"buildx builds {IMAGE_PLATFORM}")
        else:
            yield failed(
                "pooler image",
                f"buildx platforms: {', '.join(platforms) or 'none listed'}",
                f"register QEMU for arm64 (docker run --privileged --rm tonistiigi/binfmt "
                f"--install arm64), {hint}",
            )

    def rds_ca_bundle(self) -> Iterator[Check]:
        from infra.packaging import PackagingError  # noqa: PLC0415 - heavy, only here

        fetch = self.ca_bundle or _ca_bundle
        try:
            where = fetch()
        except PackagingError as error:
            yield failed("rds ca bundle", str(error), "save the bundle where the message says")
            return
        yield passed("rds ca bundle", where)


def egress_route(table: dict[str, Any]) -> str | None:
    """The target of an active 0.0.0.0/0 route that can reach AWS's APIs, if any."""
    for route in table.get("Routes", []):
        if route.get("DestinationCidrBlock") != "0.0.0.0/0":
            continue
        if route.get("State", "active") != "active":
            continue
        for key in EGRESS_TARGETS:
            if route.get(key):
                return str(route[key])
        if str(route.get("GatewayId", "")).startswith(VIRTUAL_PRIVATE_GATEWAY):
            return str(route["GatewayId"])
    return None


def net_endpoints(preflight: Preflight) -> bool:
    return preflight.settings.network.vpc_endpoints


def _ca_bundle() -> str:
    from infra.packaging import RDS_CA_BUNDLE, fetch_ca_bundle  # noqa: PLC0415

    if RDS_CA_BUNDLE.is_file():
        return f"{RDS_CA_BUNDLE.name} is in the repository"
    path: Path = fetch_ca_bundle()
    return f"fetched to {path}"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.replace("-", ".").split("."))


def _sorted(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=_version_key)


def match_engine_version(wanted: str, offered: Iterable[str]) -> str | None:
    """`wanted` itself when offered; for a major version alone (`16`) its newest offered minor."""
    offered = list(offered)
    if wanted in offered:
        return wanted
    if "." in wanted:
        return None
    under = [v for v in offered if v.startswith(f"{wanted}.")]
    return _sorted(under)[-1] if under else None
