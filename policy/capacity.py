"""Rules on the numbers: the connection budget, the role's timeouts, function limits and alarms."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import PolicyResource
from pydantic import Field, model_validator

from policy.base import (
    ECS_DEFAULT_MAXIMUM_PERCENT,
    LAMBDA_DEFAULT_TIMEOUT_S,
    PGB,
    PGBOUNCER_DEFAULT_CLIENT_CONN,
    PROXY_DEFAULT_MAX_CONNECTIONS_PERCENT,
    DirectAccessConfig,
    Finding,
    RuleConfig,
    application_functions,
    first,
    max_connections,
    pgbouncer_containers,
    queue_waits,
    statement_timeout_s,
)
from policy.stackview import (
    EXISTING_DATABASE,
    LAMBDA_FUNCTION,
    METRIC_ALARM,
    RDS_PROXY_TARGET_GROUP,
    StackView,
    as_float,
    as_int,
    as_list,
    label,
)

# -- the connection budget -----------------------------------------------------------------------


class BudgetConfig(DirectAccessConfig):
    admin_margin: int = Field(
        3,
        ge=0,
        alias="adminMargin",
        description="Connections kept free beside the reserved slots for migrations, "
        "monitoring and a human with psql; the pooler may not take them.",
    )
    client_headroom_percent: int = Field(
        20,
        ge=0,
        le=90,
        alias="clientHeadroomPercent",
        description="PgBouncer client capacity kept free above the functions' reserved "
        "concurrency, for frozen instances' connections not yet reaped.",
    )
    account_concurrency: int = Field(
        1000,
        ge=1,
        alias="accountConcurrency",
        description="The account's Lambda concurrent executions quota: unreserved functions "
        "together may run this many instances (Lambda's default quota is 1,000).",
    )


# Application Auto Scaling's scalable target: an ECS service's desired count between min and max.
SCALABLE_TARGET = "aws:appautoscaling/target:Target"


def _scaled_maximum(view: StackView, service: PolicyResource) -> int | None:
    """The largest desired count target tracking may set on `service`, if it scales."""
    services = view.of_type(service.resource_type)
    name = str(service.props.get("name") or "")
    best: int | None = None
    for target in view.of_type(SCALABLE_TARGET):
        if target.props.get("scalableDimension") != "ecs:service:DesiredCount":
            continue
        resource_id = str(target.props.get("resourceId") or "")
        if not (
            view.refers_to(target, "resourceId", [service])
            or (name and resource_id.endswith(f"/{name}"))
            or len(services) == 1
        ):
            continue
        cap = as_int(target.props.get("maxCapacity"))
        if cap is not None:
            best = cap if best is None else max(best, cap)
    return best


def _pooler_server_connections(
    view: StackView,
) -> Iterator[tuple[PolicyResource, int, str]]:
    """(resource, server connections at most, the arithmetic) for each pooler."""
    for c in pgbouncer_containers(view):
        task = c.task_definition
        max_db = as_int(c.environment.get(f"{PGB}MAX_DB_CONNECTIONS"))
        processes = as_int(c.environment.get(f"{PGB}PROCESSES")) or 1
        services = view.services_of(task)
        if max_db is None or max_db <= 0:
            yield (
                task,
                -1,
                f"{PGB}MAX_DB_CONNECTIONS is not set on container {c.name!r}: each PgBouncer "
                "process could open unlimited server connections",
            )
            continue
        for service in services:
            desired = as_int(service.props.get("desiredCount")) or 0
            scaled = _scaled_maximum(view, service)
            source = "desired"
            if scaled is not None and scaled > desired:
                desired, source = scaled, "at the auto scaling maxCapacity"
            maximum = as_int(service.props.get("deploymentMaximumPercent"))
            percent = max(maximum if maximum is not None else ECS_DEFAULT_MAXIMUM_PERCENT, 100)
            tasks = math.ceil(desired * percent / 100)
            total = tasks * processes * max_db
            yield (
                service,
                total,
                f"{tasks} tasks ({desired} {source} at deploymentMaximumPercent {percent}) x "
                f"{processes} processes x {max_db} max_db_connections = {total}",
            )
    for group in view.of_type(RDS_PROXY_TARGET_GROUP):
        m, _, _ = max_connections(view)
        pool = first(group.props.get("connectionPoolConfig"))
        given = as_int(pool.get("maxConnectionsPercent"))
        percent = given if given is not None else PROXY_DEFAULT_MAX_CONNECTIONS_PERCENT
        total = (m or 0) * percent // 100
        yield (
            group,
            total,
            f"max_connections {m} x MaxConnectionsPercent {percent}% = {total}",
        )


def check_budget(view: StackView, config: BudgetConfig) -> Iterator[Finding]:
    m, reserved, group = max_connections(view)
    if m is None and view.of_type(EXISTING_DATABASE):
        # A database the team owns has no parameter group in the stack: its max_connections is
        # read at preview (and by `slotguard verify`) and compared with the budget there.
        return
    if m is None:
        yield Finding(
            "the database's parameter group does not pin max_connections: set it explicitly "
            "so the pooler's share cannot move with the instance class.",
            group.urn if group is not None else None,
        )
        return
    ceiling = m - reserved - config.admin_margin
    ceiling_text = (
        f"{ceiling} the database can give the pooler (max_connections {m} - {reserved} "
        f"reserved (superuser, rds_superuser, reserved_connections) - {config.admin_margin} admin "
        "margin)"
    )
    for resource, total, arithmetic in _pooler_server_connections(view):
        if total < 0:
            yield Finding(f"{label(resource)}: {arithmetic}; set it from the budget.", resource.urn)
        elif total > ceiling:
            yield Finding(
                f"pooler {label(resource)} may open {arithmetic} server connections, more than "
                f"the {ceiling_text}: lower the tasks, processes or pool size, or raise "
                "max_connections.",
                resource.urn,
            )
    functions = application_functions(view, config)
    demand_parts = [
        (fn.name, n)
        for fn in functions
        if (n := as_int(fn.props.get("reservedConcurrentExecutions"))) is not None and n > 0
    ]
    # Unreserved functions (no reservation, or the provider's -1) share the account's pool:
    # together up to the account's concurrency less the reservations.
    if any(is_unreserved(fn) for fn in functions):
        pool = max(config.account_concurrency - sum(n for _, n in demand_parts), 0)
        demand_parts.append(("unreserved functions up to accountConcurrency", pool))
    demand = sum(n for _, n in demand_parts)
    for c in pgbouncer_containers(view):
        task = c.task_definition
        per_process = as_int(c.environment.get(f"{PGB}MAX_CLIENT_CONN"))
        per_process = per_process if per_process is not None else PGBOUNCER_DEFAULT_CLIENT_CONN
        processes = as_int(c.environment.get(f"{PGB}PROCESSES")) or 1
        for service in view.services_of(task):
            tasks = as_int(service.props.get("desiredCount")) or 0
            capacity = tasks * processes * per_process
            usable = capacity * (100 - config.client_headroom_percent) // 100
            if demand > usable:
                parts = " + ".join(f"{name} {n}" for name, n in demand_parts)
                yield Finding(
                    f"functions' reserved concurrency {parts} = {demand} exceeds the client "
                    f"capacity of pooler {label(service)}: {tasks} tasks x {processes} processes "
                    f"x {per_process} max_client_conn = {capacity} less "
                    f"{config.client_headroom_percent}% headroom = {usable}; raise "
                    f"{PGB}MAX_CLIENT_CONN or reserve less concurrency.",
                    service.urn,
                )
    for invocation, event in view.bootstrap_events():
        limit = as_int(event["app_user"].get("connection_limit"))
        if limit is None or limit < 0 or limit > m - reserved:
            yield Finding(
                f"{label(invocation)} gives the application role CONNECTION LIMIT "
                f"{limit if limit is not None and limit >= 0 else 'unlimited'}, above the "
                f"{m - reserved} non-reserved slots: set it to the pooler ceiling {ceiling}.",
                invocation.urn,
            )


# -- app_user timeouts ---------------------------------------------------------------------------


class AppUserConfig(RuleConfig):
    max_statement_timeout_ms: int = Field(
        30_000,
        ge=1,
        alias="maxStatementTimeoutMs",
        description="The largest statement_timeout the application role may carry.",
    )
    max_idle_in_transaction_ms: int = Field(
        60_000,
        ge=1,
        alias="maxIdleInTransactionMs",
        description="The largest idle_in_transaction_session_timeout the role may carry.",
    )


def check_app_user(view: StackView, config: AppUserConfig) -> Iterator[Finding]:
    events = view.bootstrap_events()
    if not events:
        yield Finding(
            "no Lambda invocation creates the application role (an aws.lambda_.Invocation whose "
            "input has an `app_user` object): run the bootstrap at deploy time so the role "
            "carries its timeouts.",
        )
        return
    for invocation, event in events:
        role = event["app_user"]
        name = role.get("name", "app_user")
        statement = as_int(role.get("statement_timeout_ms"))
        if statement is None or statement <= 0 or statement > config.max_statement_timeout_ms:
            shown = "unset (no limit)" if not statement else f"{statement} ms"
            yield Finding(
                f"{label(invocation)} creates role {name} with statement_timeout {shown}, "
                f"above the maximum {config.max_statement_timeout_ms} ms: lower "
                "app_user.statement_timeout_ms.",
                invocation.urn,
            )
        idle = as_int(role.get("idle_in_transaction_session_timeout_ms"))
        if idle is None or idle <= 0 or idle > config.max_idle_in_transaction_ms:
            shown = "unset (no limit)" if not idle else f"{idle} ms"
            yield Finding(
                f"{label(invocation)} creates role {name} with "
                f"idle_in_transaction_session_timeout {shown}, above the maximum "
                f"{config.max_idle_in_transaction_ms} ms: set "
                "app_user.idle_in_transaction_session_timeout_ms.",
                invocation.urn,
            )


# -- alarms --------------------------------------------------------------------------------------


class AlarmsConfig(RuleConfig):
    warn_percent: int = Field(
        70,
        ge=1,
        le=100,
        alias="warnPercent",
        description="A database-connections alarm must fire at or below this % of max_connections.",
    )
    critical_percent: int = Field(
        80,
        ge=1,
        le=100,
        alias="criticalPercent",
        description="A second one at or below this % of max_connections.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlarmsConfig:
        if self.warn_percent > self.critical_percent:
            raise ValueError("warnPercent must not exceed criticalPercent")
        return self


def _alarm_metric(alarm: PolicyResource) -> tuple[str, str, Mapping[str, Any]]:
    """(namespace, metric name, dimensions) of a plain alarm or of its metric-math queries."""
    sources = [alarm.props]
    for query in as_list(alarm.props.get("metricQueries")):
        metric = query.get("metric") if isinstance(query, Mapping) else None
        if isinstance(metric, Mapping):
            sources.append(metric)
    for source in sources:
        name = source.get("metricName")
        if isinstance(name, str) and name:
            dimensions = source.get("dimensions")
            return (
                str(source.get("namespace") or ""),
                name,
                dimensions if isinstance(dimensions, Mapping) else {},
            )
    return "", "", {}


# CloudWatch cannot publish to a topic encrypted with an AWS managed key (its policy cannot grant
# cloudwatch.amazonaws.com kms:GenerateDataKey*/Decrypt):
# https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
SNS_TOPIC = "aws:sns/topic:Topic"
AWS_MANAGED_KEY = "alias/aws/"


def check_alarms(view: StackView, config: AlarmsConfig) -> Iterator[Finding]:
    for topic in view.of_type(SNS_TOPIC):
        key = str(topic.props.get("kmsMasterKeyId") or "")
        if key.startswith(AWS_MANAGED_KEY) or f":{AWS_MANAGED_KEY}" in key:
            yield Finding(
                f"topic {label(topic)} is encrypted with the AWS managed key {key}: CloudWatch "
                "cannot publish alarms to it; use a customer managed key whose policy allows "
                "cloudwatch.amazonaws.com, or no encryption.",
                topic.urn,
            )
    alarms = view.of_type(METRIC_ALARM)
    for alarm in alarms:
        actions = [a for a in as_list(alarm.props.get("alarmActions")) if a]
        if not actions or alarm.props.get("actionsEnabled") is False:
            yield Finding(
                f"alarm {label(alarm)} notifies nobody: give it alarm_actions (the stack's "
                "alarm topic) and keep actions enabled.",
                alarm.urn,
            )
    m, _, _ = max_connections(view)
    if m is None:
        return  # the budget rule reports the missing max_connections
    thresholds = sorted(
        (
            (threshold, alarm)
            for alarm in alarms
            if _alarm_metric(alarm)[:2] == ("AWS/RDS", "DatabaseConnections")
            and "DBInstanceIdentifier" in _alarm_metric(alarm)[2]
            and (threshold := as_float(alarm.props.get("threshold"))) is not None
        ),
        key=lambda pair: pair[0],
    )
    warn = math.ceil(m * config.warn_percent / 100)
    critical = math.ceil(m * config.critical_percent / 100)
    if not thresholds or thresholds[0][0] > warn:
        lowest = (
            f" (the lowest, {label(thresholds[0][1])}, fires at {thresholds[0][0]:g})"
            if thresholds
            else ""
        )
        yield Finding(
            f"no alarm on the database's DatabaseConnections at or below {config.warn_percent}% "
            f"of max_connections {m} = {warn}{lowest}: add one so the team hears before "
            "connections run out.",
            thresholds[0][1].urn if thresholds else None,
        )
    if len(thresholds) < 2 or thresholds[1][0] > critical:
        second = (
            f" (the second lowest, {label(thresholds[1][1])}, fires at {thresholds[1][0]:g})"
            if len(thresholds) > 1
            else ""
        )
        yield Finding(
            f"no second alarm on the database's DatabaseConnections at or below "
            f"{config.critical_percent}% of max_connections {m} = {critical}{second}: add a "
            "critical alarm.",
            thresholds[1][1].urn if len(thresholds) > 1 else None,
        )


# -- functions: reserved concurrency, timeouts -------------------------------------------------


class FunctionsConfig(RuleConfig):
    pass


def is_unreserved(fn: PolicyResource) -> bool:
    """No reservation: the provider's -1 ("removes any concurrency limitations") or unset."""
    reserved = as_int(fn.props.get("reservedConcurrentExecutions"))
    return reserved is None or reserved < 0


def check_functions(view: StackView, config: FunctionsConfig) -> Iterator[Finding]:
    del config
    statement_s = statement_timeout_s(view)
    waits = queue_waits(view)
    queue_s, queue_where = max(waits) if waits else (0.0, "")
    for fn in view.of_type(LAMBDA_FUNCTION):
        reserved = as_int(fn.props.get("reservedConcurrentExecutions"))
        if reserved == 0:
            # 0 throttles every invocation; an unreserved function (-1 or unset) is bounded by
            # the account's concurrency, which connection-budget holds against the pooler.
            yield Finding(
                f"function {label(fn)} has reserved concurrency 0, which throttles every "
                "invocation: reserve at least 1 or leave it unreserved (-1).",
                fn.urn,
            )
        timeout = as_int(fn.props.get("timeout")) or LAMBDA_DEFAULT_TIMEOUT_S
        if statement_s is None:
            continue
        worst = statement_s + queue_s
        if timeout <= worst:
            parts = f"statement_timeout {statement_s:g} s"
            if queue_where:
                parts += f" + the pooler's queue wait {queue_s:g} s ({queue_where})"
            yield Finding(
                f"function {label(fn)} times out after {timeout} s, not above {parts} = "
                f"{worst:g} s: a waiting query would be killed by the platform instead of "
                "failing with an error; raise the function timeout or lower the waits.",
                fn.urn,
            )
