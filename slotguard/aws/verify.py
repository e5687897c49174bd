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
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from infra.alarm_rules import CERTIFICATE_RENEWAL_DAYS
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


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or each MetricStat of its metric math."""
    if alarm.get("MetricName"):
        return [
            {
                "Namespace": alarm.get("Namespace", ""),
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm.get("Dimensions", []),
            }
        ]
    return [
        q["MetricStat"]["Metric"]
        for q in alarm.get("Metrics", [])
        if "MetricStat" in q and "Metric" in q["MetricStat"]
    ]


# Lambda sends Errors and Throttles only when nonzero ("AWS Lambda only sends these metrics to
# CloudWatch if they have a nonzero value", AWS Lambda Metrics,
# http://docs.aws.amazon.com/lambda/latest/dg/monitoring-functions-metrics.html): a healthy
# function has none. The same function's Invocations proves the alarm's dimension instead.
LAMBDA_EVENT_METRICS = frozenset({"Errors", "Throttles"})
INVOCATIONS = "Invocations"


def event_proxy(metric: dict[str, Any]) -> dict[str, Any]:
    """The metric whose datapoints prove an alarm's metric and dimensions are live."""
    if metric.get("Namespace") == "AWS/Lambda" and metric.get("MetricName") in (
        LAMBDA_EVENT_METRICS
    ):
        return {**metric, "MetricName": INVOCATIONS}
    return metric


def describe_metric(metric: dict[str, Any]) -> str:
    dims = ", ".join(f"{d['Name']}={d['Value']}" for d in metric.get("Dimensions", []))
    return f"{metric.get('Namespace')}/{metric.get('MetricName')} {{{dims}}}"


def storm_burst(budget: Budget, function: str) -> int:
    """A small burst sized to the stack: twice the pooler's server connections (so clients
    queue for the pool), at least 10, never more than the function's reserved concurrency."""
    stormed = budget.functions.get(function)
    reserved = stormed.reserved_concurrency if stormed is not None else None
    cap = reserved if reserved is not None else 10
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
    # The burst's function and event (default: the stack's storm function, its sample event).
    storm_function: str | None = None
    storm_event: Path | None = None
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
            *([("workload roles", self.workload_roles)] if self.budget.workloads else []),
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
            FunctionName=names["health"],
            InvocationType="RequestResponse",
            Payload=self._health_payload(),
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
        yield from self._path(name, body)

    def _path(self, name: str, body: dict[str, Any]) -> Iterator[Check]:
        """The pooler's endpoint in the function's settings, and a hop the server saw.

        The health function reports the server's view of its session's client
        (inet_client_addr/port) beside its own socket: through a pooler they differ (the
        backend's client is the pooler), wired straight to the database they are equal.
        """
        via = body.get("via") or {}
        path = body.get("path") or {}
        endpoint = require(self.outputs, "pooler_endpoint")
        port = require(self.outputs, "pooler_port")
        redeploy = (
            "functions must reach the database only through the pooler: redeploy "
            "(`pulumi up`) so DB_HOST/DB_PORT are the pooler's"
        )
        if via.get("host") != endpoint or via.get("port") != int(port):
            yield failed(
                "through the pooler",
                f"{name} connected to {via.get('host')}:{via.get('port')}, the pooler is "
                f"{endpoint}:{port}",
                redeploy,
            )
        elif not path.get("server_saw") or not path.get("function"):
            yield failed(
                "through the pooler",
                f"{name} set to {endpoint}:{port}, but it reports no path (server's view "
                f"{path.get('server_saw')}, its own socket {path.get('function')})",
                "deploy the kit's functions.health handler, which reports both",
            )
        elif path["server_saw"] == path["function"]:
            yield failed(
                "through the pooler",
                f"the database saw {name}'s own socket {path['function']} as its client: "
                "nothing sits in between",
                redeploy,
            )
        else:
            seen = str(path["server_saw"]).rsplit(":", 1)[0]
            tasks = self._pooler_addresses()
            if tasks and seen not in tasks:
                yield failed(
                    "through the pooler",
                    f"the database saw {path['server_saw']} as {name}'s client, none of the "
                    f"pooler's tasks ({', '.join(sorted(tasks))})",
                    "something else sits between the functions and the database: compare "
                    "DB_HOST with the pooler_endpoint output",
                )
                return
            which = f"pooler task {seen}" if tasks else str(path["server_saw"])
            yield passed(
                "through the pooler",
                f"{name} connected to {endpoint}:{port}; the database saw {which}, not the "
                f"function's {path['function']}",
            )

    def _pooler_addresses(self) -> set[str]:
        """The private addresses of the PgBouncer service's running tasks (empty if unknown).

        A Fargate task's ENI attachment lists `privateIPv4Address` among its details
        (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Attachment.html).
        """
        cluster = self.outputs.get("ecs_cluster_name")
        service = self.outputs.get("ecs_service_name")
        if self.settings.pooler.kind != "pgbouncer" or not cluster or not service:
            return set()
        ecs = self.client("ecs")
        try:
            arns = ecs.list_tasks(
                cluster=cluster, serviceName=service, desiredStatus="RUNNING"
            ).get("taskArns", [])
            tasks = ecs.describe_tasks(cluster=cluster, tasks=arns).get("tasks", []) if arns else []
        except ClientError:
            return set()
        return {
            str(d["value"])
            for t in tasks
            for a in t.get("attachments", [])
            for d in a.get("details", [])
            if d.get("name") == "privateIPv4Address"
        }

    def _health_payload(self) -> bytes:
        """`{}`, or the workloads' roles for the health function to report as well."""
        if not self.budget.workloads:
            return b"{}"
        return json.dumps({"roles": [w.role for w in self.budget.workloads.values()]}).encode()

    def workload_roles(self) -> Iterator[Check]:
        """Each workload's role carries the budget's limit and timeouts (set by the bootstrap)."""
        found_roles = self._invoke_health()["body"].get("roles") or {}
        for w in self.budget.workloads.values():
            role = found_roles.get(w.role)
            name = f"workload {w.name} role"
            if role is None:
                yield failed(
                    name,
                    f"role {w.role} not found (or the health function predates workloads)",
                    "deploy (`pulumi up`): the bootstrap creates every workload's role",
                )
                continue
            settings = role.get("settings") or {}
            wanted = {
                "connection_limit": w.connection_limit,
                "statement_timeout": str(w.statement_timeout_ms),
                "idle_in_transaction_session_timeout": str(
                    w.idle_in_transaction_session_timeout_ms
                ),
                "lock_timeout": str(w.lock_timeout_ms),
            }
            found = {"connection_limit": role.get("connection_limit")} | {
                key: settings.get(key) for key in ROLE_SETTINGS
            }
            wrong = [f"{k} {found[k]} (budget: {v})" for k, v in wanted.items() if found[k] != v]
            if wrong:
                yield failed(
                    name,
                    f"{w.role}: " + "; ".join(wrong),
                    "run the bootstrap again: `pulumi up` (its trigger carries the role settings)",
                )
            else:
                yield passed(
                    name,
                    f"{w.role}: CONNECTION LIMIT {w.connection_limit}, statement_timeout "
                    f"{w.statement_timeout_ms} ms, lock_timeout {w.lock_timeout_ms} ms",
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
        reported = self.outputs.get("app_user_connection_limit")
        held = (
            isinstance(reported, int)
            and reported < au.connection_limit
            and found["connection_limit"] == reported
        )
        if held:
            # The bootstrap holds the limit within the running server's max_connections while
            # a larger one waits for a reboot (functions/bootstrap.py running_connection_limit).
            wanted["connection_limit"] = reported
        wrong = [f"{k} {found[k]} (budget: {v})" for k, v in wanted.items() if found[k] != v]
        if (
            wrong
            and found["connection_limit"] != wanted["connection_limit"]
            and isinstance(reported, int)
        ):
            wrong.append(f"the bootstrap reported CONNECTION LIMIT {reported}")
        if held and not wrong:
            function = self.outputs.get("bootstrap_function", "the bootstrap function")
            yield passed(
                "app_user role",
                f"{au.name}: CONNECTION LIMIT {reported}, as the bootstrap set it: held below "
                f"the budget's {au.connection_limit} until the instance restarts with the new "
                f"max_connections (pending reboot); after the reboot invoke {function} with the "
                "stack output bootstrap_event",
            )
            return
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
        yield from self._pending(instance)
        wanted = self.budget.max_connections
        if value == str(wanted):
            yield passed("max_connections", f"{value} (the budget's)")
        else:
            yield failed(
                "max_connections",
                f"parameter group says {value or 'nothing (RDS default)'}, the budget {wanted}",
                "deploy the stack's parameter group (`pulumi up`), then reboot if pending",
            )

    def _pending(self, instance: dict[str, Any]) -> Iterator[Check]:
        """What waits for the maintenance window (prod: apply_immediately off), said, not redone.

        DescribeDBInstances' PendingModifiedValues lists the modifications RDS holds until the
        window (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/
        API_PendingModifiedValues.html); `pulumi up` has already asked for them.
        """
        pending = {
            key: value
            for key, value in (instance.get("PendingModifiedValues") or {}).items()
            if value not in (None, [], {})
        }
        running = str(instance.get("EngineVersion", ""))
        wanted = self.settings.database.engine_version
        found = f"PostgreSQL {running or '?'} running, database.engine_version {wanted}"
        window = instance.get("PreferredMaintenanceWindow", "the maintenance window")
        if pending:
            listed = ", ".join(f"{k} = {v}" for k, v in sorted(pending.items()))
            yield passed(
                "pending modifications",
                f"{listed}: applied by RDS in {window} ({found}); no need to run `pulumi up` again",
            )
        elif running and running.split(".", maxsplit=1)[0] != wanted:
            yield failed(
                "engine version",
                found,
                "run `pulumi up` (see `slotguard budget --running-major "
                f"{running.split('.', maxsplit=1)[0]}` for the upgrade's path)",
            )
        else:
            yield passed("pending modifications", f"none ({found})")

    # -- the pooler ------------------------------------------------------------------------

    def pooler(self) -> Iterator[Check]:
        if self.settings.pooler.kind == "pgbouncer":
            yield from self._pgbouncer()
        else:
            yield from self._rds_proxy()

    def _pgbouncer(self) -> Iterator[Check]:
        """The service at its desired count, no rollout under way, its tasks and targets healthy.

        Target tracking moves desiredCount between `tasks` and `max_tasks`, so running is held
        against desired, not the configured count. A deployment's rolloutState is COMPLETED,
        FAILED or IN_PROGRESS, and a task's healthStatus HEALTHY, UNHEALTHY or UNKNOWN (ECS API
        reference: Deployment, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html;
        Task, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html).
        """
        ps = self.settings.pooler.pgbouncer
        low, high = ps.tasks, ps.scaling_maximum
        cluster = require(self.outputs, "ecs_cluster_name")
        service_name = require(self.outputs, "ecs_service_name")
        ecs = self.client("ecs")
        services = ecs.describe_services(cluster=cluster, services=[service_name])
        service = next(iter(services.get("services", [])), None)
        events = (
            f"read the service's events: aws ecs describe-services --cluster {cluster} "
            f"--services {service_name}"
        )
        if service is None:
            yield failed(
                "pgbouncer tasks",
                f"no service {service_name} in cluster {cluster}",
                "deploy the stack (`pulumi up`)",
            )
            running = 0
        else:
            running, desired = service["runningCount"], service["desiredCount"]
            span = f"{low}" if low == high else f"{low} to {high}"
            found = f"{running} running of {desired} desired (the stack runs {span})"
            rolling = [
                d
                for d in service.get("deployments", [])
                if d.get("rolloutState") in ("IN_PROGRESS", "FAILED")
            ]
            if rolling:
                d = rolling[0]
                yield failed(
                    "pgbouncer tasks",
                    f"{found}; deployment {d.get('id', '?')} rolloutState "
                    f"{d.get('rolloutState')}: {d.get('rolloutStateReason', '')}".rstrip(": "),
                    "a rollout is under way: wait for it and run verify again"
                    if d.get("rolloutState") == "IN_PROGRESS"
                    else f"the rollout failed: {events}; logs in {self._log_group(service)}",
                )
            elif running != desired or not low <= desired <= high:
                yield failed(
                    "pgbouncer tasks", found, f"{events}; logs in {self._log_group(service)}"
                )
            else:
                yield from self._task_health(ecs, cluster, service, found)
        arn = require(self.outputs, "target_group_arn")
        health = self.client("elbv2").describe_target_health(TargetGroupArn=arn)
        states = [d["TargetHealth"]["State"] for d in health.get("TargetHealthDescriptions", [])]
        healthy = states.count("healthy")
        found = f"{healthy} healthy of {len(states)} targets ({', '.join(states) or 'none'})"
        if healthy and healthy == running and healthy == len(states):
            yield passed("nlb targets", found)
        else:
            yield failed(
                "nlb targets",
                f"{found}; {running} tasks running",
                "unhealthy targets fail the TCP health check: read the tasks' logs "
                f"({self._log_group(service)})",
            )
        yield from self._certificate()

    def _certificate(self) -> Iterator[Check]:
        """Days left on the certificate the tasks serve, against the renewal window."""
        text = self.outputs.get("pooler_certificate_not_after")
        if not text:
            yield skipped("pooler certificate", "the stack exports no certificate expiry yet")
            return
        expires = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        days = (expires - self.now()).total_seconds() / 86400
        found = f"{days:.0f} days left (expires {expires:%Y-%m-%d})"
        if days >= CERTIFICATE_RENEWAL_DAYS:
            yield passed("pooler certificate", found)
        else:
            yield failed(
                "pooler certificate",
                found,
                f"inside its last {CERTIFICATE_RENEWAL_DAYS} days: run `pulumi up`, which issues a "
                "new one and rolls the tasks (README, 'Renewing the pooler certificate')",
            )

    def _task_health(
        self, ecs: Any, cluster: str, service: dict[str, Any], found: str
    ) -> Iterator[Check]:
        arns = ecs.list_tasks(
            cluster=cluster, serviceName=service["serviceName"], desiredStatus="RUNNING"
        ).get("taskArns", [])
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns).get("tasks", []) if arns else []
        sick = [t for t in tasks if t.get("healthStatus") == "UNHEALTHY"]
        if sick:
            names = ", ".join(
                f"{t['taskArn'].rsplit('/', 1)[-1]} "
                + ", ".join(
                    f"{c.get('name')} {c.get('healthStatus')}" for c in t.get("containers", [])
                )
                for t in sick
            )
            yield failed(
                "pgbouncer tasks",
                f"{found}; unhealthy: {names}",
                f"read the tasks' logs ({self._log_group(service)})",
            )
        else:
            states = sorted({str(t.get("healthStatus", "UNKNOWN")) for t in tasks})
            yield passed("pgbouncer tasks", f"{found}; health {', '.join(states) or '-'}")

    def _log_group(self, service: dict[str, Any] | None) -> str:
        """The pooler's log group as the task definition names it (its generated suffix too)."""
        prefix = f"/ecs/slotguard-{self.settings.stack}-pgbouncer-*"
        definition = (service or {}).get("taskDefinition")
        if not definition:
            return prefix
        try:
            containers = self.client("ecs").describe_task_definition(taskDefinition=definition)[
                "taskDefinition"
            ]["containerDefinitions"]
        except ClientError:
            return prefix
        for container in containers:
            group = ((container.get("logConfiguration") or {}).get("options") or {}).get(
                "awslogs-group"
            )
            if group:
                return str(group)
        return prefix

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
            configured = alarm.get("AlarmConfigurationUpdatedTimestamp") or since
            settled = (now - configured).total_seconds() > ALARM_GRACE_S
            watched = [event_proxy(m) for m in alarm_metrics(alarm)]
            silent = [m for m in watched if not self._has_data(cloudwatch, m)]
            if state == "ALARM":
                # A stack just deployed with an alarm firing is broken, whatever the alarm is:
                # a health alarm treating missing data as breaching fires when nothing reports.
                missing = alarm.get("TreatMissingData") == "breaching"
                yield failed(
                    f"alarm {name}",
                    f"ALARM for {age / 60:.0f} min: {alarm.get('StateReason', '')[:200]}"
                    + ("; missing data counts as breaching" if missing else ""),
                    "fix what the alarm watches (its metric has no data, or breaches) before "
                    "relying on the stack; the dashboard shows it",
                )
            elif state == "INSUFFICIENT_DATA" and age > ALARM_GRACE_S:
                yield failed(
                    f"alarm {name}",
                    f"INSUFFICIENT_DATA for {age / 60:.0f} min: its metric never arrives",
                    f"check the metric {alarm.get('Namespace')}/{alarm.get('MetricName')} and "
                    "its dimensions exist (the pooler's exporter, the function names)",
                )
            elif silent and settled and all(m["MetricName"] == INVOCATIONS for m in silent):
                # Lambda sends its invocation counts only when nonzero: a function never
                # invoked yet cannot show its dimension is right. Said, not failed.
                yield passed(
                    f"alarm {name}",
                    f"{state}, notifies {len(alarm['AlarmActions'])}; its function has no "
                    "invocation yet, so its metric's dimension is not proven",
                )
            elif silent and settled:
                yield failed(
                    f"alarm {name}",
                    f"{state}, but no datapoint of {'; '.join(map(describe_metric, silent))} in "
                    "the last two weeks: it can never fire",
                    "the alarm watches a metric or dimension nothing publishes: redeploy the "
                    "alarms (`pulumi up`) or fix the publisher",
                )
            else:
                yield passed(f"alarm {name}", f"{state}, notifies {len(alarm['AlarmActions'])}")

    def _has_data(self, cloudwatch: Any, metric: dict[str, Any]) -> bool:
        """ListMetrics lists a metric only if it had datapoints in the past two weeks
        (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_ListMetrics.html)."""
        listed = cloudwatch.list_metrics(
            Namespace=metric["Namespace"],
            MetricName=metric["MetricName"],
            Dimensions=[
                {"Name": d["Name"], "Value": d["Value"]} for d in metric.get("Dimensions", [])
            ],
        )
        wanted = {(d["Name"], d["Value"]) for d in metric.get("Dimensions", [])}
        return any(
            {(d["Name"], d["Value"]) for d in m.get("Dimensions", [])} == wanted
            for m in listed.get("Metrics", [])
        )

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
        # Heavy imports, needed only here.
        from slotguard.local.targets import TargetError, aws_target  # noqa: PLC0415
        from slotguard.storm import run_storm  # noqa: PLC0415
        from slotguard.storm.traffic import TrafficError, choose_traffic  # noqa: PLC0415

        try:
            traffic = choose_traffic(self.settings, self.storm_function, self.storm_event)
            burst = self.burst or storm_burst(self.budget, traffic.function)
            client = self.storm_client(burst) if self.storm_client is not None else None
            target = aws_target(
                self.settings.stack,
                ["pooled"],
                burst=burst,
                region=self.region,
                outputs=self.outputs,
                client=client,
                traffic=traffic,
            )
        except (TrafficError, TargetError) as error:
            raise CheckError(str(error), "choose the burst's --function and --event") from None
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
