"""Rules on who reaches the database: through the pooler only, no network path around it, TLS."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pulumi_policy import PolicyResource

from policy.base import (
    OPEN_CIDRS,
    PGB,
    SECURE_SSLMODES,
    DirectAccessConfig,
    Finding,
    RuleConfig,
    application_functions,
    pgbouncer_containers,
)
from policy.stackview import (
    RDS_CLUSTER,
    RDS_INSTANCE,
    RDS_PROXY,
    SECURITY_GROUP,
    SG_EGRESS_RULE,
    SG_INGRESS_RULE,
    SG_RULE,
    StackView,
    as_list,
    label,
)

# -- functions connect through the pooler ------------------------------------------------------


class ThroughPoolerConfig(DirectAccessConfig):
    pass


def check_through_pooler(view: StackView, config: ThroughPoolerConfig) -> Iterator[Finding]:
    databases = view.of_type(RDS_INSTANCE, RDS_CLUSTER)
    endpoints = {
        str(v)
        for db in databases
        for v in (
            db.props.get("address"),
            db.props.get("endpoint"),
            db.props.get("readerEndpoint"),
        )
        if isinstance(v, str) and v
    }
    db_urns = {db.urn for db in databases}
    for fn in application_functions(view, config):
        env = view.function_environment(fn)
        by_value = sorted(k for k, v in env.items() if any(e in v for e in endpoints))
        by_dependency = sorted(
            d.name for d in view.depends_on(fn, "environment") if d.urn in db_urns
        )
        if by_value or by_dependency:
            what = (
                f"variables {', '.join(by_value)} hold the database endpoint"
                if by_value
                else f"its environment depends on the database instance {by_dependency[0]}"
            )
            yield Finding(
                f"function {label(fn)} bypasses the pooler: {what}. Set DB_HOST to the pooler's "
                "endpoint (the PgBouncer NLB or the RDS Proxy endpoint), never the database's.",
                fn.urn,
            )


# -- security groups -----------------------------------------------------------------------------


class NetworkConfig(DirectAccessConfig):
    pass


@dataclass(frozen=True)
class _Flow:
    rule: PolicyResource
    direction: str  # "ingress" or "egress"
    group_urns: frozenset[str]  # the group the rule belongs to
    peer_urns: frozenset[str]  # the groups it allows traffic from/to
    cidrs: frozenset[str]


def _flows(view: StackView) -> Iterator[_Flow]:
    groups = view.of_type(SECURITY_GROUP)

    def urns(resource: PolicyResource, prop: str) -> frozenset[str]:
        return frozenset(g.urn for g in view.refers_to(resource, prop, groups))

    for rule in view.of_type(SG_INGRESS_RULE, SG_EGRESS_RULE):
        direction = "ingress" if rule.resource_type == SG_INGRESS_RULE else "egress"
        cidrs = {str(rule.props.get(k)) for k in ("cidrIpv4", "cidrIpv6") if rule.props.get(k)}
        yield _Flow(
            rule,
            direction,
            urns(rule, "securityGroupId"),
            urns(rule, "referencedSecurityGroupId"),
            frozenset(cidrs),
        )
    for rule in view.of_type(SG_RULE):
        own = urns(rule, "securityGroupId")
        peers = urns(rule, "sourceSecurityGroupId")
        if rule.props.get("self"):
            peers = peers | own
        cidrs = {
            str(c) for k in ("cidrBlocks", "ipv6CidrBlocks") for c in as_list(rule.props.get(k))
        }
        yield _Flow(rule, str(rule.props.get("type", "ingress")), own, peers, frozenset(cidrs))
    for group in groups:
        for direction in ("ingress", "egress"):
            for inline in as_list(group.props.get(direction)):
                if not isinstance(inline, Mapping):
                    continue
                peer_values = {str(v) for v in as_list(inline.get("securityGroups"))}
                inline_peers = {g.urn for g in groups if str(g.props.get("id", "")) in peer_values}
                if inline.get("self"):
                    inline_peers.add(group.urn)
                cidrs = {
                    str(c) for k in ("cidrBlocks", "ipv6CidrBlocks") for c in as_list(inline.get(k))
                }
                yield _Flow(
                    group,
                    direction,
                    frozenset({group.urn}),
                    frozenset(inline_peers),
                    frozenset(cidrs),
                )


def check_network(view: StackView, config: NetworkConfig) -> Iterator[Finding]:
    groups = view.of_type(SECURITY_GROUP)
    fn_groups: dict[str, PolicyResource] = {}
    for fn in application_functions(view, config):
        vpc = view.refers_to(fn, "vpcConfig", groups)
        fn_groups.update({g.urn: g for g in vpc})
    db_groups = {
        g.urn: g
        for db in view.of_type(RDS_INSTANCE, RDS_CLUSTER)
        for g in view.refers_to(db, "vpcSecurityGroupIds", groups)
    }
    for urn in sorted(set(fn_groups) & set(db_groups)):
        group = db_groups[urn]
        yield Finding(
            f"security group {label(group)} is attached to both functions and the database: "
            "give the database its own group that admits only the pooler (and the bootstrap).",
            group.urn,
        )
    for flow in _flows(view):
        if flow.direction == "ingress" and flow.cidrs & OPEN_CIDRS:
            yield Finding(
                f"{label(flow.rule)} admits {', '.join(sorted(flow.cidrs & OPEN_CIDRS))}: "
                "nothing in the stack takes traffic from anywhere; reference the source's "
                "security group instead of a CIDR.",
                flow.rule.urn,
            )
        if flow.direction == "ingress":
            sources, targets = flow.peer_urns, flow.group_urns
        else:
            sources, targets = flow.group_urns, flow.peer_urns
        if sources & set(fn_groups) and targets & set(db_groups):
            yield Finding(
                f"{label(flow.rule)} opens a path from the functions' security group to the "
                f"database's ({flow.direction}): functions must reach only the pooler; remove "
                "the rule and let the pooler's group be the database's only client.",
                flow.rule.urn,
            )


# -- database private, encrypted, TLS; pooler TLS ------------------------------------------------


class TlsConfig(RuleConfig):
    pass


def check_database_tls(view: StackView, config: TlsConfig) -> Iterator[Finding]:
    del config
    for db in view.of_type(RDS_INSTANCE):
        if db.props.get("publiclyAccessible") is True:
            yield Finding(
                f"database {label(db)} is publicly accessible: set publicly_accessible=False "
                "(the functions and the pooler reach it inside the VPC).",
                db.urn,
            )
        if db.props.get("storageEncrypted") is not True:
            yield Finding(
                f"database {label(db)} is not encrypted at rest: set storage_encrypted=True.",
                db.urn,
            )
        group = view.parameter_group_of(db)
        force = view.parameters(group).get("rds.force_ssl") if group is not None else None
        if force != "1":
            where = label(group) if group is not None else "no parameter group"
            yield Finding(
                f"database {label(db)} does not force TLS ({where} has rds.force_ssl="
                f"{force or 'unset'}): set the parameter rds.force_ssl to 1.",
                (group or db).urn,
            )
    for proxy in view.of_type(RDS_PROXY):
        if proxy.props.get("requireTls") is not True:
            yield Finding(
                f"RDS Proxy {label(proxy)} accepts clients without TLS: set require_tls=True.",
                proxy.urn,
            )
    for c in pgbouncer_containers(view):
        task = c.task_definition
        have = set(c.environment) | set(c.secrets)
        missing = [v for v in (f"{PGB}CLIENT_TLS_CERT", f"{PGB}CLIENT_TLS_KEY") if v not in have]
        if missing:
            yield Finding(
                f"PgBouncer container {c.name!r} of {label(task)} has no client TLS "
                f"({', '.join(missing)} missing): inject the pooler's certificate and key from "
                "Secrets Manager so clients connect with TLS.",
                task.urn,
            )
        sslmode = c.environment.get(f"{PGB}DB_SSLMODE", "verify-full")
        if sslmode not in SECURE_SSLMODES:
            yield Finding(
                f"PgBouncer container {c.name!r} of {label(task)} connects to the database with "
                f"{PGB}DB_SSLMODE={sslmode}: use verify-full.",
                task.urn,
            )
