"""Alarms on connection use, to an SNS topic, and a dashboard of connections over time.

Every threshold is one of `budget.alarms`; the PgBouncer metric names and dimensions are imported
from the exporter's own definitions, so an alarm cannot watch a metric nobody publishes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.alarm_rules import AlarmRule, alarm_rules
from infra.budget import Budget
from infra.settings import StackSettings
from pgbouncer import metrics as pgb

RDS_NAMESPACE = "AWS/RDS"
# Container Insights (enabled on the cluster) publishes each service's task counts.
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Container-Insights-metrics-ECS.html
ECS_INSIGHTS_NAMESPACE = "ECS/ContainerInsights"
# https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-cloudwatch-metrics.html
NLB_NAMESPACE = "AWS/NetworkELB"
LAMBDA_NAMESPACE = "AWS/Lambda"
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
# What a publisher to an SSE topic needs on its key.
CLOUDWATCH_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey*")
# RDS Proxy connection counts add up over the proxy's nodes (see CLOUDWATCH_METRICS).
PROXY_COUNT_STATISTIC = "Sum"


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm, before it becomes a resource: what it watches and when it fires."""

    key: str
    description: str
    namespace: str
    metric: str
    statistic: str
    comparison: str
    threshold: float
    dimensions: Mapping[str, pulumi.Input[str]]
    missing_data: str = "notBreaching"
    # > 0: the metric is published per pooler task under shared dimensions and the threshold is
    # a total over all tasks, so the alarm compares `Average x tasks` (metric math) with it.
    tasks: int = 0


@dataclass
class AlarmsArgs:
    settings: StackSettings
    budget: Budget
    database_identifier: pulumi.Input[str]
    pooler_kind: str
    pooler_dimensions: Mapping[str, pulumi.Input[str]]
    function_names: Mapping[str, pulumi.Input[str]]
    tags: dict[str, str]
    # Logical health metric -> its CloudWatch dimensions (the pooler's `health_dimensions`).
    pooler_health_dimensions: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(
        default_factory=dict
    )
    # Aurora or an existing cluster: each instance's identifier by role ("writer", "reader-1",
    # or a member's identifier). Each instance has its own max_connections, so the connection
    # alarms watch each one (DBInstanceIdentifier); empty for the RDS instance of old.
    instance_identifiers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # The Aurora cluster (DBClusterIdentifier), for the dashboard's cluster-wide lines.
    cluster_identifier: pulumi.Input[str] | None = None


# Where each logical metric of the alarm rules lives in CloudWatch: namespace, metric name and
# statistic; the dimensions depend on what it measures (the instance, the pooler, a function).
# Pooler metrics whose thresholds count over all tasks (each task publishes its own figure).
TOTAL_OVER_TASKS = frozenset({"pooler_waiting_clients", "pooler_client_connections"})
CLOUDWATCH_METRICS: dict[str, tuple[str, str, str]] = {
    "db_connections": (RDS_NAMESPACE, "DatabaseConnections", "Maximum"),
    "pooler_waiting_clients": (pgb.NAMESPACE, pgb.CLIENT_WAITING.name, "Average"),
    "pooler_oldest_wait_s": (pgb.NAMESPACE, pgb.MAX_WAIT.name, "Maximum"),
    "pooler_client_connections": (pgb.NAMESPACE, pgb.CLIENT_CONNECTIONS.name, "Average"),
    # RDS Proxy publishes its metrics per proxy node (several EC2 instances may serve one
    # proxy): a connection count is the Sum over the nodes, Maximum would see one node.
    "proxy_pinned_connections": (
        RDS_NAMESPACE,
        "DatabaseConnectionsCurrentlySessionPinned",
        PROXY_COUNT_STATISTIC,
    ),
    "proxy_borrow_latency_us": (RDS_NAMESPACE, "DatabaseConnectionsBorrowLatency", "Maximum"),
    "function_throttles": (LAMBDA_NAMESPACE, "Throttles", "Sum"),
    "function_errors": (LAMBDA_NAMESPACE, "Errors", "Sum"),
    # Desired minus running tasks: metric math over the two counts (see _tasks_missing).
    "pooler_tasks_missing": (ECS_INSIGHTS_NAMESPACE, "RunningTaskCount", "Average"),
    "pooler_unhealthy_targets": (NLB_NAMESPACE, "UnHealthyHostCount", "Maximum"),
    "pooler_healthy_targets": (NLB_NAMESPACE, "HealthyHostCount", "Minimum"),
    # Every task publishes one heartbeat per interval: no sample at all is the alarm.
    "pooler_exporter_heartbeat": (pgb.NAMESPACE, pgb.HEARTBEAT.name, "SampleCount"),
    # The task closest to expiry: the Minimum over the tasks' datapoints.
    "pooler_certificate_days_left": (pgb.NAMESPACE, pgb.CERTIFICATE_DAYS_LEFT.name, "Minimum"),
    # The share of health checks the proxy's target passed, averaged over the proxy's nodes.
    "proxy_availability_percent": (RDS_NAMESPACE, "AvailabilityPercentage", "Average"),
    # Aurora Serverless v2, per instance (DBInstanceIdentifier) or per cluster
    # (DBClusterIdentifier): capacity used as a percentage of the maximum ACUs.
    "db_acu_utilization": (RDS_NAMESPACE, "ACUUtilization", "Maximum"),
}
# Metrics alarmed once per database instance when the stack has several (Aurora).
PER_INSTANCE_METRICS = frozenset({"db_connections", "db_acu_utilization"})
HEALTH_METRICS = frozenset(
    {
        "pooler_tasks_missing",
        "pooler_unhealthy_targets",
        "pooler_healthy_targets",
        "proxy_availability_percent",
    }
)


def alarm_specs(args: AlarmsArgs) -> list[AlarmSpec]:
    """The budget's alarm rules (shared with the local target) mapped onto CloudWatch."""
    specs: list[AlarmSpec] = []
    tasks = args.budget.pgbouncer.tasks if args.budget.pgbouncer is not None else 0
    for rule in alarm_rules(args.budget):
        namespace, metric, statistic = CLOUDWATCH_METRICS[rule.metric]
        if rule.metric.startswith("function_"):
            suffix = rule.key.removeprefix("function-")
            for key, name in sorted(args.function_names.items()):
                specs.append(
                    AlarmSpec(
                        f"{key}-{suffix}",
                        f"{key}: {rule.description}",
                        namespace,
                        metric,
                        statistic,
                        rule.comparison,
                        rule.threshold,
                        {"FunctionName": name},
                    )
                )
            continue
        if rule.metric in PER_INSTANCE_METRICS and args.instance_identifiers:
            specs += _per_instance(rule, args.instance_identifiers)
            continue
        dimensions: Mapping[str, pulumi.Input[str]]
        if rule.metric == "db_connections":
            dimensions = {"DBInstanceIdentifier": args.database_identifier}
        elif rule.metric in HEALTH_METRICS:
            dimensions = dict(args.pooler_health_dimensions[rule.metric])
        else:
            dimensions = dict(args.pooler_dimensions)
            if rule.role is not None:  # a workload's own pool (the exporter's per-user metric)
                dimensions[pgb.DIMENSION_USER] = rule.role
        specs.append(
            AlarmSpec(
                rule.key,
                rule.description,
                namespace,
                metric,
                statistic,
                rule.comparison,
                rule.threshold,
                dimensions,
                missing_data=rule.missing_data,
                tasks=tasks if rule.metric in TOTAL_OVER_TASKS else 0,
            )
        )
    return specs


def _dashboard_body(
    args: AlarmsArgs,
    region: str,
    database_identifier: str,
    function_names: dict[str, str],
    pooler_dimensions: Mapping[str, str],
) -> str:
    al, budget = args.budget.alarms, args.budget

    def line(label: str, value: float) -> dict[str, Any]:
        return {"label": label, "value": value}

    # A cluster's identifier names the cluster (DBClusterIdentifier), not an instance.
    db_dimension = (
        "DBClusterIdentifier" if args.cluster_identifier is not None else "DBInstanceIdentifier"
    )

    db_widget = {
        "type": "metric",
        "x": 0,
        "y": 0,
        "width": 12,
        "height": 6,
        "properties": {
            "title": "Database connections",
            "region": region,
            "stat": "Maximum",
            "period": al.period_s,
            "metrics": [
                [RDS_NAMESPACE, "DatabaseConnections", db_dimension, database_identifier],
            ],
            "annotations": {
                "horizontal": [
                    line("max_connections", budget.max_connections),
                    line("critical", al.db_connections_critical),
                    line("warn", al.db_connections_warn),
                    line("pooler + admin (bypass)", al.db_connections_bypass),
                ]
            },
        },
    }
    dims = [part for key, value in sorted(pooler_dimensions.items()) for part in (key, value)]
    if args.pooler_kind == "pgbouncer":
        pooler_metrics = [
            [pgb.NAMESPACE, metric.name, *dims]
            for metric in (pgb.CLIENT_CONNECTIONS, pgb.CLIENT_WAITING, pgb.SERVER_CONNECTIONS)
        ]
        pooler_title = "PgBouncer, busiest task: clients, waiting clients, server connections"
    else:
        pooler_metrics = [
            [RDS_NAMESPACE, metric, *dims]
            for metric in (
                "ClientConnections",
                "DatabaseConnections",
                "DatabaseConnectionsCurrentlySessionPinned",
            )
        ]
        pooler_title = "RDS Proxy connections, all proxy nodes"
    pooler_widget = {
        "type": "metric",
        "x": 12,
        "y": 0,
        "width": 12,
        "height": 6,
        "properties": {
            "title": pooler_title,
            "region": region,
            "stat": "Maximum" if args.pooler_kind == "pgbouncer" else PROXY_COUNT_STATISTIC,
            "period": al.period_s,
            "metrics": pooler_metrics,
        },
    }
    lambda_widget = {
        "type": "metric",
        "x": 0,
        "y": 6,
        "width": 24,
        "height": 6,
        "properties": {
            "title": "Function concurrency and throttles",
            "region": region,
            "stat": "Maximum",
            "period": al.period_s,
            "metrics": [
                [LAMBDA_NAMESPACE, metric, "FunctionName", name]
                for name in sorted(function_names.values())
                for metric in ("ConcurrentExecutions", "Throttles")
            ],
        },
    }
    widgets = [db_widget, pooler_widget, lambda_widget]
    if budget.serverless_acu is not None:
        widgets.append(_capacity_widget(region, al.period_s, database_identifier, budget))
    return json.dumps({"widgets": widgets}, sort_keys=True)


def _capacity_widget(
    region: str, period_s: int, cluster_identifier: str, budget: Budget
) -> dict[str, Any]:
    """Serverless v2: ACUs in use and their share of the maximum, cluster-wide."""
    assert budget.serverless_acu is not None
    low, high = budget.serverless_acu
    return {
        "type": "metric",
        "x": 0,
        "y": 12,
        "width": 24,
        "height": 6,
        "properties": {
            "title": f"Aurora Serverless v2 capacity ({low:g}-{high:g} ACU)",
            "region": region,
            "stat": "Maximum",
            "period": period_s,
            "metrics": [
                [RDS_NAMESPACE, metric, "DBClusterIdentifier", cluster_identifier]
                for metric in ("ServerlessDatabaseCapacity", "ACUUtilization")
            ],
        },
    }


def _tasks_missing(spec: AlarmSpec, period_s: int) -> dict[str, Any]:
    """Metric math: Container Insights' desired task count minus its running task count."""

    def count(query_id: str, metric: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
        return aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=query_id,
            return_data=False,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                namespace=ECS_INSIGHTS_NAMESPACE,
                metric_name=metric,
                stat=spec.statistic,
                period=period_s,
                dimensions=dict(spec.dimensions),
            ),
        )

    return {
        "metric_queries": [
            count("desired", "DesiredTaskCount"),
            count("running", "RunningTaskCount"),
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="missing",
                expression="desired - running",
                label="PgBouncer tasks desired but not running",
                return_data=True,
            ),
        ]
    }


def _total_over_tasks(spec: AlarmSpec, period_s: int) -> dict[str, Any]:
    """Metric math: the tasks' average figure times the number of tasks, i.e. their total."""
    return {
        "metric_queries": [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="per_task",
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=spec.namespace,
                    metric_name=spec.metric,
                    stat=spec.statistic,
                    period=period_s,
                    dimensions=dict(spec.dimensions),
                ),
            ),
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="total",
                expression=f"per_task * {spec.tasks}",
                label=f"{spec.metric}, all {spec.tasks} tasks",
                return_data=True,
            ),
        ]
    }


def topic_key_policy(account_id: str, partition: str = "aws") -> str:
    """The alarm topic key's policy: the account administers it, CloudWatch encrypts with it.

    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # The default key policy: IAM policies of the account decide who manages it.
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchAlarmsPublish",
                    "Effect": "Allow",
                    "Principal": {"Service": CLOUDWATCH_PRINCIPAL},
                    "Action": list(CLOUDWATCH_KEY_ACTIONS),
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        },
        sort_keys=True,
    )


def _watched(spec: AlarmSpec, period_s: int) -> dict[str, Any]:
    """The alarm's metric arguments: one metric, or metric math for totals and missing tasks."""
    if spec.tasks:
        return _total_over_tasks(spec, period_s)
    if spec.namespace == ECS_INSIGHTS_NAMESPACE:
        return _tasks_missing(spec, period_s)
    return {
        "namespace": spec.namespace,
        "metric_name": spec.metric,
        "statistic": spec.statistic,
        "period": period_s,
        "dimensions": dict(spec.dimensions),
    }


def _per_instance(rule: AlarmRule, instances: Mapping[str, pulumi.Input[str]]) -> list[AlarmSpec]:
    """One alarm per instance: the writer keeps the rule's key, the others get a suffix."""
    namespace, metric, statistic = CLOUDWATCH_METRICS[rule.metric]
    return [
        AlarmSpec(
            rule.key if role == "writer" else f"{rule.key}-{role}",
            f"{role}: {rule.description}",
            namespace,
            metric,
            statistic,
            rule.comparison,
            rule.threshold,
            {"DBInstanceIdentifier": identifier},
            missing_data=rule.missing_data,
        )
        for role, identifier in sorted(instances.items())
    ]


class Alarms(pulumi.ComponentResource):
    """The alarm topic, every alarm of the budget and the dashboard."""

    topic_arn: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    alarms: dict[str, aws.cloudwatch.MetricAlarm]

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("slotguard:alarms:Alarms", name, None, opts)
        s, al = args.settings, args.budget.alarms
        child = pulumi.ResourceOptions(parent=self)
        # CloudWatch cannot publish to a topic under the AWS managed key alias/aws/sns (its
        # policy cannot be changed to let cloudwatch.amazonaws.com use it): the topic gets a
        # key of its own whose policy allows CloudWatch.
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOptions(parent=self)).partition
        key = aws.kms.Key(
            f"{name}-topic-key",
            description=f"slotguard {s.stack}: encrypts the alarm topic; CloudWatch may use it",
            enable_key_rotation=True,
            deletion_window_in_days=30 if s.is_prod else 7,
            policy=pulumi.Output.all(identity.account_id, partition).apply(
                lambda parts: topic_key_policy(parts[0], parts[1])
            ),
            tags=args.tags,
            opts=child,
        )
        # No fixed name: Pulumi generates one, so a replacement never collides with the old topic.
        topic = aws.sns.Topic(
            f"{name}-topic",
            kms_master_key_id=key.arn,
            tags=args.tags,
            opts=child,
        )
        if s.alarms.email:
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=topic.arn,
                protocol="email",
                endpoint=s.alarms.email,
                opts=child,
            )
        self.alarms = {}
        for spec in alarm_specs(args):
            what = _watched(spec, al.period_s)
            self.alarms[spec.key] = aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                name=f"slotguard-{s.stack}-{spec.key}",
                alarm_description=spec.description,
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                evaluation_periods=al.evaluation_periods,
                datapoints_to_alarm=al.evaluation_periods,
                # Usage alarms: no datapoint means no traffic, not a breach. Health alarms: no
                # datapoint means the pooler publishes nothing, which is the breach.
                treat_missing_data=spec.missing_data,
                alarm_actions=[topic.arn],
                ok_actions=[topic.arn],
                tags=args.tags,
                opts=child,
                **what,
            )
        region = aws.get_region_output(opts=pulumi.InvokeOptions(parent=self)).region
        dashboard_name = f"slotguard-{s.stack}"
        aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=dashboard_name,
            dashboard_body=pulumi.Output.all(
                region,
                args.database_identifier,
                pulumi.Output.all(**args.function_names),
                pulumi.Output.all(**args.pooler_dimensions),
            ).apply(lambda parts: _dashboard_body(args, parts[0], parts[1], parts[2], parts[3])),
            opts=child,
        )
        self.topic_arn = topic.arn
        self.dashboard_url = region.apply(
            lambda r: (
                f"https://{r}.console.aws.amazon.com/cloudwatch/home?region={r}"
                f"#dashboards:name={dashboard_name}"
            )
        )
        self.register_outputs({"topic_arn": topic.arn, "dashboard_url": self.dashboard_url})
