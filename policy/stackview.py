"""Read a stack's registered resources the way the rules need them.

The rules see what Pulumi hands a stack policy (`pulumi_policy.PolicyResource`: type, properties in
the engine's camelCase, urn, name, parent, dependencies), both under `pulumi preview` and in the
offline runner. This module answers the questions several rules share: which resources of a type,
what a property refers to, what a function's or a container's environment holds. It reads only
what was registered, never the stack settings, so a fork that changes the program is still judged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import PolicyResource
from pulumi_policy import proxy as unknowns

# Resource types the rules read (Pulumi type tokens of pulumi-aws 7).
LAMBDA_FUNCTION = "aws:lambda/function:Function"
LAMBDA_INVOCATION = "aws:lambda/invocation:Invocation"
# The bootstrap function's configuration variable (functions/bootstrap.py CONFIG_ENV).
BOOTSTRAP_CONFIG = "BOOTSTRAP_CONFIG"
RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
RDS_CLUSTER_PARAMETER_GROUP = "aws:rds/clusterParameterGroup:ClusterParameterGroup"
# The component the program declares for a database the team owns (infra/database_existing.py).
EXISTING_DATABASE = "slotguard:database:ExistingDatabase"
RDS_PROXY = "aws:rds/proxy:Proxy"
RDS_PROXY_TARGET_GROUP = "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"
ECS_TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"

# Properties through which a resource is found from another one's value.
_IDENTITY_PROPS = ("id", "arn", "name", "identifier", "address", "endpoint")


class Unknown:
    """A value a preview cannot know yet: present (truthy), but neither a number nor text."""

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


def known(value: Any) -> Any:
    """Plain values, with what a preview cannot know yet (ids, ARNs, endpoints) as `UNKNOWN`.

    Under `pulumi preview` the engine wraps properties in proxies that raise on any unknown
    value, which would stop a whole rule at the first id of a resource not yet created. The rules
    judge literal numbers and references (property dependencies), which a preview knows, so an
    unknown is kept as a marker instead. The proxies are unwrapped through `__target`, as
    pulumi-policy's own serializer does.
    """
    if isinstance(value, unknowns._DictProxy | unknowns._ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {k: known(v) for k, v in value.items()}
    if isinstance(value, list):
        return [known(v) for v in value]
    if unknowns._is_unknown(value):
        return UNKNOWN
    return value


def label(resource: PolicyResource) -> str:
    """`name (type)`, how `pulumi preview` names a resource in a policy report."""
    return f"{resource.name} ({resource.resource_type})"


def as_int(value: Any) -> int | None:
    """An integer from a number or a numeric string; None when absent or not numeric."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


@dataclass(frozen=True)
class Container:
    """One container of an ECS task definition: plain variables and injected secrets."""

    task_definition: PolicyResource
    name: str
    environment: dict[str, str]
    secrets: dict[str, str]  # variable -> valueFrom (a Secrets Manager or SSM reference)


@dataclass
class StackView:
    """The registered resources of one stack, indexed for the rules."""

    resources: Sequence[PolicyResource]
    stack: str = ""
    _by_urn: dict[str, PolicyResource] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for resource in self.resources:
            resource.props = known(resource.props)
        self._by_urn = {r.urn: r for r in self.resources}

    def of_type(self, *types: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type in types]

    def by_urn(self, urn: str) -> PolicyResource | None:
        return self._by_urn.get(urn)

    # -- references between resources ---------------------------------------------------------

    def refers_to(
        self, resource: PolicyResource, prop: str, candidates: Iterable[PolicyResource]
    ) -> list[PolicyResource]:
        """The candidates that `resource.props[prop]` refers to.

        The engine's property dependencies say it exactly (and work in a preview, where ids are
        still unknown); without them the property's values are matched against the candidates'
        identities (id, ARN, name).
        """
        pool = list(candidates)
        deps = (getattr(resource, "property_dependencies", None) or {}).get(prop)
        if deps:
            urns = {d.urn for d in deps}
            return [c for c in pool if c.urn in urns]
        values = set(_scalars(resource.props.get(prop)))
        if not values:
            return []
        return [c for c in pool if values & set(_identities(c))]

    def depends_on(self, resource: PolicyResource, prop: str | None = None) -> list[PolicyResource]:
        """Resources `resource` depends on: through `prop` when the engine says, else at all."""
        prop_deps = getattr(resource, "property_dependencies", None) or {}
        if prop is not None and prop in prop_deps:
            return list(prop_deps[prop])
        return list(resource.dependencies or [])

    # -- common readings ----------------------------------------------------------------------

    def function_environment(self, function: PolicyResource) -> dict[str, str]:
        env = function.props.get("environment")
        variables = env.get("variables") if isinstance(env, Mapping) else None
        if not isinstance(variables, Mapping):
            return {}
        return {str(k): _text(v) for k, v in variables.items()}

    def containers(self) -> Iterator[Container]:
        """Every container of every ECS task definition."""
        for task in self.of_type(ECS_TASK_DEFINITION):
            raw = task.props.get("containerDefinitions")
            definitions: Any = raw
            if isinstance(raw, str):
                try:
                    definitions = json.loads(raw)
                except json.JSONDecodeError:
                    continue
            for item in as_list(definitions):
                if not isinstance(item, Mapping):
                    continue
                yield Container(
                    task_definition=task,
                    name=str(item.get("name", "")),
                    environment={
                        str(e.get("name")): _text(e.get("value"))
                        for e in as_list(item.get("environment"))
                        if isinstance(e, Mapping)
                    },
                    secrets={
                        str(e.get("name")): _text(e.get("valueFrom"))
                        for e in as_list(item.get("secrets"))
                        if isinstance(e, Mapping)
                    },
                )

    def services_of(self, task: PolicyResource) -> list[PolicyResource]:
        """ECS services that run `task`."""
        return [
            s
            for s in self.of_type(ECS_SERVICE)
            if task in self.refers_to(s, "taskDefinition", [task])
        ]

    def parameters(self, group: PolicyResource) -> dict[str, str]:
        return {
            str(p.get("name")): _text(p.get("value"))
            for p in as_list(group.props.get("parameters"))
            if isinstance(p, Mapping)
        }

    def parameter_group_of(self, instance: PolicyResource) -> PolicyResource | None:
        groups = self.of_type(RDS_PARAMETER_GROUP)
        prop = "dbParameterGroupName" if instance.resource_type == RDS_CLUSTER_INSTANCE else None
        found = self.refers_to(instance, prop or "parameterGroupName", groups)
        if found:
            return found[0]
        return groups[0] if len(groups) == 1 else None

    def bootstrap_events(self) -> list[tuple[PolicyResource, dict[str, Any]]]:
        """Lambda invocations that create the application role, with the settings they apply.

        The bootstrap reads its settings from its own configuration (`BOOTSTRAP_CONFIG` in the
        invoked function's environment; the event only triggers a run); an invocation whose
        input carries them (an older program) counts too.
        """
        events = []
        for invocation in self.of_type(LAMBDA_INVOCATION):
            function = self.function_for(invocation)
            variables = (
                as_mapping(as_mapping(function.props.get("environment")).get("variables"))
                if function is not None
                else {}
            )
            for raw in (variables.get(BOOTSTRAP_CONFIG), invocation.props.get("input")):
                try:
                    event = json.loads(raw) if isinstance(raw, str) else raw
                except json.JSONDecodeError:
                    continue
                if isinstance(event, Mapping) and isinstance(event.get("app_user"), Mapping):
                    events.append((invocation, dict(event)))
                    break
        return events

    def function_for(self, invocation: PolicyResource) -> PolicyResource | None:
        found = self.refers_to(invocation, "functionName", self.of_type(LAMBDA_FUNCTION))
        return found[0] if found else None


def _text(value: Any) -> str:
    if value is None or isinstance(value, Unknown):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalars(value: Any) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if text:
            yield text
        return
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _scalars(item)
        return
    if isinstance(value, Iterable):
        for item in value:
            yield from _scalars(item)


def _identities(resource: PolicyResource) -> Iterator[str]:
    for prop in _IDENTITY_PROPS:
        value = resource.props.get(prop)
        if isinstance(value, str) and value:
            yield value
