"""What every rule shares: findings, configuration models, and readings of the pooler and database.

A rule is a plain function over a `StackView` (what the engine registered) and its own
configuration model; it yields a `Finding` per violation, naming the resource and the fix. The
configuration model's JSON schema is the pack's `config_schema`, and its validation turns a bad
value into an error naming the key to change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pulumi_policy import EnforcementLevel, PolicyConfigSchema, PolicyResource
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policy.stackview import (
    LAMBDA_FUNCTION,
    RDS_CLUSTER_INSTANCE,
    RDS_INSTANCE,
    RDS_PROXY_TARGET_GROUP,
    Container,
    StackView,
    as_int,
    as_list,
    label,
)

PGB = "PGBOUNCER_"
# AWS and PostgreSQL defaults the rules assume when a resource leaves a value out.
LAMBDA_DEFAULT_TIMEOUT_S = 3
RDS_DEFAULT_SUPERUSER_RESERVED = 3
# rds.rds_superuser_reserved_connections' default: RDS keeps these from ordinary roles too
# (AWS knowledge center, rds-postgresql-error-connection-slots).
RDS_DEFAULT_RDS_SUPERUSER_RESERVED = 2
PROXY_DEFAULT_MAX_CONNECTIONS_PERCENT = 100
PROXY_DEFAULT_BORROW_TIMEOUT_S = 120
PROXY_DEFAULT_IDLE_CLIENT_TIMEOUT_S = 1800
ECS_DEFAULT_MAXIMUM_PERCENT = 200
PGBOUNCER_DEFAULT_QUERY_WAIT_S = 120
PGBOUNCER_DEFAULT_CLIENT_CONN = 100
OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
SECURE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


class RuleConfigError(ValueError):
    """A policy configuration value that does not validate; the message names the key."""


@dataclass(frozen=True)
class Finding:
    """One violation: what is wrong and what to change, and the resource it is about."""

    message: str
    urn: str | None = None


class RuleConfig(BaseModel):
    """Base of the rules' configuration: camelCase keys as in Pulumi policy config files."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


C = TypeVar("C", bound=RuleConfig)


@dataclass(frozen=True)
class Rule(Generic[C]):
    """A named rule, its configuration model and the check itself."""

    name: str
    description: str
    config_model: type[C]
    check: Callable[[StackView, C], Iterator[Finding]]
    enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY

    def config(self, given: Mapping[str, Any] | None = None) -> C:
        """Defaults overlaid with `given`; a bad value raises naming the rule and key."""
        values = {k: v for k, v in (given or {}).items() if k != "enforcementLevel"}
        try:
            return self.config_model.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in error.errors()
            )
            raise RuleConfigError(f"policy config `{self.name}`: {problems}") from None

    def schema_properties(self) -> dict[str, dict[str, Any]]:
        """The JSON schema of each config key (camelCase), with its default and description."""
        properties = self.config_model.model_json_schema(by_alias=True).get("properties", {})
        return {
            key: {k: v for k, v in schema.items() if k != "title"}
            for key, schema in properties.items()
        }

    def config_schema(self) -> PolicyConfigSchema | None:
        properties = self.schema_properties()
        return PolicyConfigSchema(properties=properties) if properties else None

    def run(self, view: StackView, given: Mapping[str, Any] | None = None) -> list[Finding]:
        return list(self.check(view, self.config(given)))


# -- helpers shared by the rules ---------------------------------------------------------------


class DirectAccessConfig(RuleConfig):
    direct_handlers: list[str] = Field(
        ["functions.bootstrap.handler"],
        alias="directHandlers",
        description="Handlers of functions allowed to reach the database directly: the "
        "deploy-time bootstrap that creates the roles and runs migrations.",
    )


def application_functions(view: StackView, config: DirectAccessConfig) -> list[PolicyResource]:
    allowed = set(config.direct_handlers)
    return [f for f in view.of_type(LAMBDA_FUNCTION) if f.props.get("handler") not in allowed]


def max_connections(view: StackView) -> tuple[int | None, int, PolicyResource | None]:
    """`max_connections` and the slots kept from ordinary roles, as the parameter group pins."""
    for instance in view.of_type(RDS_INSTANCE, RDS_CLUSTER_INSTANCE):
        group = view.parameter_group_of(instance)
        if group is None:
            continue
        params = view.parameters(group)
        superuser = as_int(params.get("superuser_reserved_connections"))
        rds = as_int(params.get("rds.rds_superuser_reserved_connections"))
        pg16 = as_int(params.get("reserved_connections"))
        reserved = (
            (superuser if superuser is not None else RDS_DEFAULT_SUPERUSER_RESERVED)
            + (rds if rds is not None else RDS_DEFAULT_RDS_SUPERUSER_RESERVED)
            + (pg16 or 0)
        )
        return as_int(params.get("max_connections")), reserved, group
    return None, RDS_DEFAULT_SUPERUSER_RESERVED + RDS_DEFAULT_RDS_SUPERUSER_RESERVED, None


def pgbouncer_containers(view: StackView) -> list[Container]:
    return [
        c for c in view.containers() if any(k.startswith(PGB) for k in (*c.environment, *c.secrets))
    ]


def statement_timeout_s(view: StackView) -> float | None:
    values = [
        as_int(event["app_user"].get("statement_timeout_ms"))
        for _, event in view.bootstrap_events()
    ]
    known = [v for v in values if v is not None]
    return max(known) / 1000 if known else None


def queue_waits(view: StackView) -> list[tuple[float, str]]:
    """The pooler's queue wait limits: (seconds, where it is set)."""
    waits: list[tuple[float, str]] = []
    for c in pgbouncer_containers(view):
        value = as_int(c.environment.get(f"{PGB}QUERY_WAIT_TIMEOUT_S"))
        waits.append(
            (
                value if value is not None else PGBOUNCER_DEFAULT_QUERY_WAIT_S,
                f"{PGB}QUERY_WAIT_TIMEOUT_S of {label(c.task_definition)}",
            )
        )
    for group in view.of_type(RDS_PROXY_TARGET_GROUP):
        pool = first(group.props.get("connectionPoolConfig"))
        value = as_int(pool.get("connectionBorrowTimeout"))
        waits.append(
            (
                value if value is not None else PROXY_DEFAULT_BORROW_TIMEOUT_S,
                f"connectionBorrowTimeout of {label(group)}",
            )
        )
    return waits


def first(value: Any) -> Mapping[str, Any]:
    items = as_list(value)
    return items[0] if items and isinstance(items[0], Mapping) else {}
