"""Preflight for a database the team owns: can the stack's subnets reach it, and does it give
the connections the budget counts on?

Read-only, like the rest of preflight. Reachability is what the stack itself can decide: the
database is in the stack's VPC, its security group is the one the stack adds its ingress rule
to (and has room for it), and every stack subnet's route table routes the VPC's own range
locally (the `local` route AWS adds to every route table). Network ACLs are left to the team.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from typing import Any

from botocore.exceptions import ClientError

from infra.budget import Budget
from infra.existing_lookup import cluster_members, live_max_connections, refusal
from infra.settings import StackSettings
from slotguard.aws.checks import Check, failed, passed, skipped

# Amazon VPC quotas: "Inbound or outbound rules per security group" defaults to 60
# (https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-security-groups).
SG_INBOUND_RULES_QUOTA = 60
# The stack adds this many ingress rules to the database's group: the pooler's and the
# bootstrap's (infra/network.py).
STACK_INGRESS_RULES = 2

ClientFactory = Callable[[str], Any]


def existing_database_checks(
    settings: StackSettings, budget: Budget, client: ClientFactory
) -> Iterator[Check]:
    """Every check of an existing database, in order; stops where a later one cannot run."""
    db = settings.database
    if db.kind != "existing":
        yield skipped("existing database", f"database.kind is {db.kind}")
        return
    ex = db.existing
    rds, ec2 = client("rds"), client("ec2")
    try:
        found = _describe(rds, ex.identifier, cluster=ex.is_cluster)
    except ClientError as error:
        yield failed(
            "existing database",
            error.response.get("Error", {}).get("Message", str(error)),
            f"fix database.existing.{'cluster' if ex.is_cluster else 'instance'}_identifier "
            "(and the stack's region)",
        )
        return
    vpc, groups, db_subnets = found
    wanted_vpc = settings.network.vpc_id
    if vpc != wanted_vpc:
        yield failed(
            "database vpc",
            f"{ex.identifier} is in {vpc}, the stack's subnets in {wanted_vpc}",
            "set network.vpc_id and network.subnet_ids to the database's VPC and private subnets",
        )
        return
    yield passed("database vpc", f"{ex.identifier} in {vpc}, the stack's VPC")
    yield from _security_group(ec2, ex.security_group_id or "", groups, vpc)
    yield from _routes(ec2, settings, db_subnets)
    instances = cluster_members(rds, ex.identifier) if ex.is_cluster else [ex.identifier]
    live = live_max_connections(rds, instances)
    problem = refusal(budget.max_connections, live)
    if problem is None:
        yield passed(
            "database max_connections",
            f"{live.value} >= the budget's {budget.max_connections} ({live.source})",
        )
    else:
        setting, _, message = problem.partition(": ")
        yield failed("database max_connections", message, f"change {setting}")


def _describe(rds: Any, identifier: str, *, cluster: bool) -> tuple[str, list[str], list[str]]:
    """(VPC, security groups, subnet ids) of the instance or cluster."""
    if cluster:
        found = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
        groups = [g["VpcSecurityGroupId"] for g in found.get("VpcSecurityGroups", [])]
        subnet_group = rds.describe_db_subnet_groups(DBSubnetGroupName=found["DBSubnetGroup"])[
            "DBSubnetGroups"
        ][0]
    else:
        found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        groups = [g["VpcSecurityGroupId"] for g in found.get("VpcSecurityGroups", [])]
        subnet_group = found["DBSubnetGroup"]
    subnets = [s["SubnetIdentifier"] for s in subnet_group.get("Subnets", [])]
    return str(subnet_group["VpcId"]), groups, subnets


def _security_group(ec2: Any, group_id: str, groups: list[str], vpc: str) -> Iterator[Check]:
    if group_id not in groups:
        yield failed(
            "database security group",
            f"{group_id} is not attached to the database (its groups: {', '.join(groups)})",
            "set database.existing.security_group_id to one of the database's groups",
        )
        return
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    inbound = sum(
        max(1, len(p.get("IpRanges", [])) + len(p.get("UserIdGroupPairs", [])))
        for p in group.get("IpPermissions", [])
    )
    if group.get("VpcId") != vpc or inbound + STACK_INGRESS_RULES > SG_INBOUND_RULES_QUOTA:
        yield failed(
            "database security group",
            f"{group_id}: {inbound} inbound rules, the stack adds {STACK_INGRESS_RULES} "
            f"(quota {SG_INBOUND_RULES_QUOTA} per group)",
            "make room in the group or raise the quota in Service Quotas",
        )
        return
    yield passed(
        "database security group",
        f"{group_id}: {inbound} inbound rules + the stack's {STACK_INGRESS_RULES} named ones "
        f"<= {SG_INBOUND_RULES_QUOTA}",
    )


def _routes(ec2: Any, settings: StackSettings, db_subnets: list[str]) -> Iterator[Check]:
    """Each stack subnet's route table routes the database subnets' ranges locally."""
    # Each id once: the stack's subnets may be the database's own.
    wanted = sorted({*settings.network.subnet_ids, *db_subnets})
    subnets = ec2.describe_subnets(SubnetIds=wanted)["Subnets"]
    ranges = {s["SubnetId"]: IPv4Network(s["CidrBlock"]) for s in subnets}
    targets = [ranges[s] for s in db_subnets if s in ranges]
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [settings.network.vpc_id]}]
    )["RouteTables"]
    main = next((t for t in tables if any(a.get("Main") for a in t.get("Associations", []))), None)
    missing: list[str] = []
    for subnet in settings.network.subnet_ids:
        table = next(
            (
                t
                for t in tables
                if any(a.get("SubnetId") == subnet for a in t.get("Associations", []))
            ),
            main,
        )
        local = [
            IPv4Network(r["DestinationCidrBlock"])
            for r in (table or {}).get("Routes", [])
            if r.get("GatewayId") == "local" and "DestinationCidrBlock" in r
        ]
        if not all(any(t.subnet_of(n) for n in local) for t in targets):
            missing.append(subnet)
    if missing:
        yield failed(
            "database route",
            f"route tables of {', '.join(missing)} have no local route to the database "
            f"subnets ({', '.join(map(str, targets))})",
            "use subnets of the database's VPC whose route tables keep the VPC's local route",
        )
    else:
        yield passed(
            "database route",
            f"{len(settings.network.subnet_ids)} stack subnets route "
            f"{', '.join(map(str, targets))} locally",
        )
