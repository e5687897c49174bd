"""Whether a deployed stack works: read-only AWS look-ups plus the stack's own functions.

Nothing here connects to the database from this machine: the health function reports the
utilisation and the role settings from inside the VPC, through the pooler.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.budget import Budget
from infra.settings import StackSettings
from slotguard.aws.checks import Check, CheckError, CheckFn, failed, passed, run_checks, skipped
from slotguard.aws.outputs import require
from slotguard.aws.verify_database import database_checks

ClientFactory = Callable[[str], Any]
# An alarm may sit in INSUFFICIENT_DATA while its first periods are evaluated; after this long
# it is stuck (its metric or dimensions never produce data).
ALARM_GRACE_S = 600
# DescribeAlarms takes at most 100 alarm names per call.
DESCRIBE_ALARMS_MAX_NAMES = 100
# RDS publishes DatabaseConnections every minute; it can take a few minutes to show.
METRIC_PERIOD_S = 60
METRIC_WAIT_S = 300
ROLE_SETTINGS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout")


def storm_burst(budget: Budget) -> int:
    """A small burst sized to the stack: twice the pooler's server connections (so clients
    queue for the pool), at least 10, never more than the API's reserved concurrency."""
    api = budget.functions.get("api")
    cap = api.reserved_concurrency if api is not None else 10
    return max(1, min(cap, max(10, 2 * budget.pooler_server_connections)))


@dataclass
class Verify:
    """One deployed stack: its settings and budget, its outputs, and AWS clients."""

    settings: StackSettings
    budget: Budget
    outputs: dict[str, Any]
    client: ClientFactory
    region: str | None
    storm: bool = True
    burst: int | None = None
    storm_client: Callable[[int], Any] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], None] = time.sleep
    metric_wait_s: float = METRIC_WAIT_S
    _health: dict[str, Any] | None = None

    def run(self) -> list[Check]:
        return run_checks(self.named_checks())

    def named_checks(self) -> list[tuple[str, CheckFn]]:
        return [
            ("health function", self.health),
            ("app_user role", self.app_user),
            ("parameter group", self.parameter_group),
            ("pooler", self.pooler),
            ("alarms", self.alarms),
            ("alarm subscription", self.subscription),
            ("storm", self.storm_check),
        ]

    # -- the health function ---------------------------------------------------------------

    def _invoke_health(self) -> dict[str, Any]:
        if self._health is not None:
            return self._health
        names = require(self.outputs, "function_names")
        if "health" not in names:
            raise CheckError(
                "the stack has no `health` function",
                "add functions.health (handler functions.health.handler) and deploy",
            )
        response = self.client("lambda").invoke(
            FunctionName=names["health"], InvocationType="RequestResponse", Payload=b"{}"
        )
        text = response["Payload"].read().decode(errors="replace")
        if response.get("FunctionError"):
            raise CheckError(
                f"{names['health']} raised: {text[:300]}",
                f"read the function's log group /aws/lambda/{names['health']}",
            )
        try:
            answer = json.loads(text)
            body = json.loads(answer["body"])
        except (ValueError, KeyError, TypeError):
            raise CheckError(
                f"{names['health']} answered {text[:200]!r}, not a health response",
                "deploy the kit's functions.health handler",
            ) from None
        self._health = {"status": answer.get("statusCode"), "body": body, "name": names["health"]}
        return self._health

    def health(self) -> Iterator[Check]:
        health = self._invoke_health()
        body, name = health["body"], health["name"]
        connections = body.get("connections") or {}
        if health["status"] == 200 and {"total", "max", "percent"} <= set(connections):
            yield passed(
                "health function",
                f"{name}: 200, {connections['total']} of {connections['max']} database "
                f"connections ({connections['percent']}%)",
            )
        else:
            yield failed(
                "health function",
                f"{name}: {health['status']} {body.get('status')}: "
                f"{body.get('reason') or json.dumps(body)[:200]}",
                "fix what `reason` names (database reachable, pooler running, utilisation "
                "below the alarm)",
            )
        via = body.get("via") or {}
        endpoint = require(self.outputs, "pooler_endpoint")
        port = require(self.outputs, "pooler_port")
        if via.get("host") == endpoint and via.get("port") == int(port):
            yield passed("through the pooler", f"{name} connected to {endpoint}:{port}")
        else:
            yield failed(
                "through the pooler",
                f"{name} connected to {via.get('host')}:{via.get('port')}, the pooler is "
                f"{endpoint}:{port}",
                "functions must reach the database only through the pooler: redeploy "
                "(`pulumi up`) so DB_HOST/DB_PORT are the pooler's",
            )

    def app_user(self) -> Iterator[Check]:
        role = (self._invoke_health()["body"].get("role")) or {}
        au = self.budget.app_user
        wanted = {
            "name": au.name,
            "connection_limit": au.connection_limit,
            "statement_timeout": str(au.statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(au.idle_in_transaction_session_timeout_ms),
            "lock_timeout": str(au.lock_timeout_ms),
        }
        settings = role.get("settings") or {}
        found = {
            "name": role.get("name"),
            "connection_limit": role.get("connection_limit"),
            **{key: settings.get(key) for key in ROLE_SETTINGS},
        }
        wrong = [f"{k} {found[k]} (budget: {v})" for k, v in wanted.items() if found[k] != v]
        if wrong:
            yield failed(
                "app_user role",
                "; ".join(wrong),
                "run the bootstrap again: `pulumi up` (its trigger carries the role settings)",
            )
        else:
            yield passed(
                "app_user role",
                f"{au.name}: CONNECTION LIMIT {au.connection_limit}, statement_timeout "
                f"{au.statement_timeout_ms} ms, idle_in_transaction_session_timeout "
                f"{au.idle_in_transaction_session_timeout_ms} ms, lock_timeout "
                f"{au.lock_timeout_ms} ms",
            )

    # -- the database ----------------------------------------------------------------------

    def parameter_group(self) -> Iterator[Check]:
        if self.settings.database.kind != "rds-instance":
            yield from database_checks(
                self.budget, self.outputs, self.client("rds"), self._invoke_health
            )
            return
        identifier = require(self.outputs, "database_identifier")
        rds = self.client("rds")
        instance = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        groups = instance.get("DBParameterGroups", [])
        pending = [g for g in groups if g.get("ParameterApplyStatus") != "in-sync"]
        found = ", ".join(
            f"{g['DBParameterGroupName']} {g['ParameterApplyStatus']}" for g in groups
        )
        if pending:
            yield failed(
                "parameter group in sync",
                found,
                "reboot the instance to apply static parameters: aws rds reboot-db-instance "
                f"--db-instance-identifier {identifier}",
            )
        else:
            yield passed("parameter group in sync", found)
        value: str | None = None
        paginator = rds.get_paginator("describe_db_parameters")
        for group in groups:
            for page in paginator.paginate(
                DBParameterGroupName=group["DBParameterGroupName"], Source="user"
            ):
                for parameter in page.get("Parameters", []):
                    if parameter.get("ParameterName") == "max_connections":
                        value = parameter.get("ParameterValue")
        wanted = self.budget.max_connections
        if value == str(wanted):
            yield passed("max_connections", f"{value} (the budget's)")
        else:
            yield failed(
                "max_connections",
                f"parameter group says {value or 'nothing (RDS default)'}, the budget {wanted}",
                "deploy the stack's parameter group (`pulumi up`), then reboot if pending",
            )

    # -- the pooler ------------------------------------------------------------------------

    def pooler(self) -> Iterator[Check]:
        if self.settings.pooler.kind == "pgbouncer":
            yield from self._pgbouncer()
        else:
            yield from self._rds_proxy()

    def _pgbouncer(self) -> Iterator[Check]:
        pb = self.budget.pgbouncer
        tasks = pb.tasks if pb is not None else 0
        cluster = require(self.outputs, "ecs_cluster_name")
        service_name = require(self.outputs, "ecs_service_name")
        services = self.client("ecs").describe_services(cluster=cluster, services=[service_name])
        service = next(iter(services.get("services", [])), None)
        if service is None:
            yield failed(
                "pgbouncer tasks",
                f"no service {service_name} in cluster {cluster}",
                "deploy the stack (`pulumi up`)",
            )
        else:
            running, desired = service["runningCount"], service["desiredCount"]
            found = f"{running} running of {desired} desired (budget: {tasks} tasks)"
            if running == desired == tasks:
                yield passed("pgbouncer tasks", found)
            else:
                yield failed(
                    "pgbouncer tasks",
                    found,
                    f"read the service's events: aws ecs describe-services --cluster {cluster} "
                    f"--services {service_name}",
                )
        arn = require(self.outputs, "target_group_arn")
        health = self.client("elbv2").describe_target_health(TargetGroupArn=arn)
        states = [d["TargetHealth"]["State"] for d in health.get("TargetHealthDescriptions", [])]
        healthy = states.count("healthy")
        found = f"{healthy} healthy of {len(states)} targets ({', '.join(states) or 'none'})"
        if healthy == tasks and healthy == len(states):
            yield passed("nlb targets", found)
        else:
            yield failed(
                "nlb targets",
                found,
                "unhealthy targets fail the TCP health check: read the tasks' logs "
                f"(/ecs/slotguard-{self.settings.stack}-pgbouncer)",
            )

    def _rds_proxy(self) -> Iterator[Check]:
        proxy = require(self.outputs, "proxy_name")
        targets = self.client("rds").describe_db_proxy_targets(DBProxyName=proxy)["Targets"]
        instances = [t for t in targets if t.get("Type") == "RDS_INSTANCE"]
        states = [
            f"{t.get('RdsResourceId')} {t.get('TargetHealth', {}).get('State')}" for t in instances
        ]
        bad = [t for t in instances if t.get("TargetHealth", {}).get("State") != "AVAILABLE"]
        if instances and not bad:
            yield passed("rds proxy targets", ", ".join(states))
        else:
            reasons = "; ".join(
                f"{t.get('TargetHealth', {}).get('Reason')}: "
                f"{t.get('TargetHealth', {}).get('Description')}"
                for t in bad
            )
            yield failed(
                "rds proxy targets",
                ", ".join(states) or "no instance target",
                f"{reasons or 'register the instance'} (check the proxy's secret and security "
                "groups)",
            )

    # -- alarms ----------------------------------------------------------------------------

    def alarms(self) -> Iterator[Check]:
        names: list[str] = list(require(self.outputs, "alarm_names"))
        cloudwatch = self.client("cloudwatch")
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), DESCRIBE_ALARMS_MAX_NAMES):
            chunk = names[start : start + DESCRIBE_ALARMS_MAX_NAMES]
            for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=chunk):
                for alarm in page.get("MetricAlarms", []):
                    found[alarm["AlarmName"]] = alarm
        now = self.now()
        for name in names:
            alarm = found.get(name)
            if alarm is None:
                yield failed(f"alarm {name}", "does not exist", "deploy the stack (`pulumi up`)")
                continue
            if not alarm.get("AlarmActions"):
                yield failed(
                    f"alarm {name}",
                    "has no alarm action",
                    "deploy the stack's alarms (`pulumi up`): each notifies the SNS topic",
                )
                continue
            state = alarm["StateValue"]
            since = alarm.get("StateUpdatedTimestamp") or now
            age = (now - since).total_seconds()
            if state == "INSUFFICIENT_DATA" and age > ALARM_GRACE_S:
                yield failed(
                    f"alarm {name}",
                    f"INSUFFICIENT_DATA for {age / 60:.0f} min: its metric never arrives",
                    f"check the metric {alarm.get('Namespace')}/{alarm.get('MetricName')} and "
                    "its dimensions exist (the pooler's exporter, the function names)",
                )
            else:
                yield passed(f"alarm {name}", f"{state}, notifies {len(alarm['AlarmActions'])}")

    def subscription(self) -> Iterator[Check]:
        email = self.settings.alarms.email
        if not email:
            yield skipped("alarm subscription", "alarms.email not set")
            return
        topic = require(self.outputs, "alarm_topic_arn")
        subscriptions: list[dict[str, Any]] = []
        paginator = self.client("sns").get_paginator("list_subscriptions_by_topic")
        for page in paginator.paginate(TopicArn=topic):
            subscriptions += page.get("Subscriptions", [])
        mine = [s for s in subscriptions if s.get("Protocol") == "email" and s["Endpoint"] == email]
        if not mine:
            yield failed(
                "alarm subscription",
                f"no e-mail subscription for {email} on {topic}",
                "deploy the stack (`pulumi up`)",
            )
        elif mine[0]["SubscriptionArn"] == "PendingConfirmation":
            yield failed(
                "alarm subscription",
                f"{email} has not confirmed the subscription",
                f"click the link in the e-mail AWS sent to {email} (subject: AWS Notification - "
                "Subscription Confirmation)",
            )
        else:
            yield passed("alarm subscription", f"{email} confirmed")

    # -- a small storm ---------------------------------------------------------------------

    def storm_check(self) -> Iterator[Check]:
        if not self.storm:
            yield skipped("storm", "--no-storm")
            return
        from slotguard.local.targets import aws_target  # noqa: PLC0415 - heavy, only here
        from slotguard.storm import run_storm  # noqa: PLC0415

        burst = self.burst or storm_burst(self.budget)
        client = self.storm_client(burst) if self.storm_client is not None else None
        target = aws_target(
            self.settings.stack,
            ["pooled"],
            burst=burst,
            region=self.region,
            outputs=self.outputs,
            client=client,
        )
        started = self.now()
        report = run_storm(target.wirings, burst, limits=target.limits, show_progress=False)
        ended = self.now()
        result = report.wirings[0]
        if result.failed_total:
            yield failed(
                "storm",
                f"burst {burst}: {result.failed_total} failed ({result.failed})",
                "read the failures' causes; `slotguard storm --target aws` shows the table",
            )
        else:
            yield passed("storm", f"burst {burst}: 0 failed")
        yield from self._peak(started, ended)

    def _peak(self, started: datetime, ended: datetime) -> Iterator[Check]:
        identifier = require(self.outputs, "database_identifier")
        # A cluster's connections are counted per instance (each has its own ceiling).
        instances = sorted((self.outputs.get("database_instance_identifiers") or {}).values()) or [
            identifier
        ]
        limit = self.budget.pooler_ceiling + self.budget.admin_margin
        cloudwatch = self.client("cloudwatch")
        deadline = time.monotonic() + self.metric_wait_s
        while True:
            points = [
                point
                for instance in instances
                for point in cloudwatch.get_metric_statistics(
                    Namespace="AWS/RDS",
                    MetricName="DatabaseConnections",
                    Dimensions=[{"Name": "DBInstanceIdentifier", "Value": instance}],
                    StartTime=started - timedelta(seconds=METRIC_PERIOD_S),
                    EndTime=ended + timedelta(seconds=METRIC_PERIOD_S),
                    Period=METRIC_PERIOD_S,
                    Statistics=["Maximum"],
                ).get("Datapoints", [])
            ]
            if points or time.monotonic() >= deadline:
                break
            self.sleep(15)
        if not points:
            yield failed(
                "storm peak connections",
                "no DatabaseConnections datapoint for the storm yet",
                "RDS publishes it each minute: run `slotguard verify` again in a few minutes",
            )
            return
        peak = max(float(p["Maximum"]) for p in points)
        found = (
            f"peak {peak:g} database connections; ceiling {self.budget.pooler_ceiling} + admin "
            f"margin {self.budget.admin_margin} = {limit}"
        )
        if peak <= limit:
            yield passed("storm peak connections", found)
        else:
            yield failed(
                "storm peak connections",
                found,
                "something bypasses the pooler or the pooler exceeds its share: compare "
                "pooler.* with the budget (`slotguard budget`)",
            )
