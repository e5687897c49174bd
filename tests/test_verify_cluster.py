"""`slotguard verify` on a cluster: the storm's peak is read per instance (each has its own
ceiling), not under the cluster's identifier."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3

from tests.aws_stubs import REGION
from tests.test_verify import one, outputs, settings, storm_lambda, verify


def _connections(instance: str, value: float) -> None:
    # RDS's DatabaseConnections is published per instance, dimension DBInstanceIdentifier
    # (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/Aurora.AuroraMonitoring.Metrics.html).
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace="AWS/RDS",
        MetricData=[
            {
                "MetricName": "DatabaseConnections",
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": instance}],
                "Timestamp": datetime.now(UTC),
                "Value": value,
                "Unit": "Count",
            }
        ],
    )


def test_the_peak_of_any_instance_counts(aws: None) -> None:
    _connections("cluster-writer", 10)
    _connections("cluster-reader-1", 111)
    out = outputs(
        database_identifier="cluster",
        database_instance_identifiers={"writer": "cluster-writer", "reader-1": "cluster-reader-1"},
    )
    v = verify(settings(), out=out, burst=4, storm_client=lambda size: storm_lambda(4))
    peak = one(list(v.storm_check()), "storm peak connections")
    assert peak.failed
    assert "peak 111" in peak.found
