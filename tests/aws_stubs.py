"""AWS responses recorded as AWS documents them, for APIs moto does not model.

Every builder names the API reference page its shape follows. Tests feed them to botocore's
Stubber, which also validates each response against the service model. The `aws` fixture
(a plugin of conftest) gives a test moto's in-process AWS for the APIs moto does model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process AWS with fake credentials in the stacks' region, for one test."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def aws_client(service: str, region: str = REGION) -> Any:
    """A boto3 client for any service named at run time (moto answers inside mock_aws)."""
    make: Any = boto3.client
    return make(service, region_name=region)


def stubbed(service: str, region: str = REGION) -> tuple[Any, Stubber]:
    make: Any = boto3.client  # typed per service name; tests pass the name as a string
    client = make(
        service,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client, Stubber(client)


def account_settings(quota: int, unreserved: int) -> dict[str, Any]:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html
    return {
        "AccountLimit": {
            "TotalCodeSize": 80530636800,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": quota,
            "UnreservedConcurrentExecutions": unreserved,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
    }


def function_concurrency(reserved: int) -> dict[str, Any]:
    # https://docs.aws.amazon.com/lambda/latest/api/API_GetFunctionConcurrency.html
    return {"ReservedConcurrentExecutions": reserved}


def engine_versions(*versions: str, status: str = "available") -> dict[str, Any]:
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBEngineVersions.html
    return {
        "DBEngineVersions": [
            {
                "Engine": "postgres",
                "EngineVersion": v,
                "MajorEngineVersion": v.split(".")[0],
                "DBParameterGroupFamily": f"postgres{v.split('.')[0]}",
                "DBEngineDescription": "PostgreSQL",
                "DBEngineVersionDescription": f"PostgreSQL {v}-R1",
                "Status": status,
            }
            for v in versions
        ]
    }


def orderable(
    instance_class: str, version: str, zones: list[str], *, multi_az: bool = True
) -> dict[str, Any]:
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeOrderableDBInstanceOptions.html
    # (OrderableDBInstanceOption: https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_OrderableDBInstanceOption.html)
    return {
        "OrderableDBInstanceOptions": [
            {
                "Engine": "postgres",
                "EngineVersion": version,
                "DBInstanceClass": instance_class,
                "LicenseModel": "postgresql-license",
                "AvailabilityZones": [{"Name": z} for z in zones],
                "MultiAZCapable": multi_az,
                "ReadReplicaCapable": True,
                "Vpc": True,
                "StorageType": "gp3",
            }
        ]
    }


def invoke_response(
    payload: dict[str, Any], *, function_error: str | None = None
) -> dict[str, Any]:
    # https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html: a RequestResponse call
    # answers StatusCode 200; an error the function raised sets FunctionError ("Unhandled").
    import io
    import json

    from botocore.response import StreamingBody

    raw = json.dumps(payload).encode()
    response: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
        "Payload": StreamingBody(io.BytesIO(raw), len(raw)),
    }
    if function_error is not None:
        response["FunctionError"] = function_error
    return response


def db_instance(identifier: str, group: str, apply_status: str) -> dict[str, Any]:
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBInstances.html
    # (DBParameterGroupStatus.ParameterApplyStatus: `in-sync`, `pending-reboot`, `applying`:
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBParameterGroupStatus.html)
    return {
        "DBInstances": [
            {
                "DBInstanceIdentifier": identifier,
                "DBInstanceClass": "db.t4g.micro",
                "Engine": "postgres",
                "DBInstanceStatus": "available",
                "DBParameterGroups": [
                    {"DBParameterGroupName": group, "ParameterApplyStatus": apply_status}
                ],
            }
        ]
    }


def ecs_service(cluster: str, name: str, running: int, desired: int) -> dict[str, Any]:
    # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeServices.html
    return {
        "services": [
            {
                "serviceName": name,
                "clusterArn": f"arn:aws:ecs:{REGION}:123456789012:cluster/{cluster}",
                "status": "ACTIVE",
                "desiredCount": desired,
                "runningCount": running,
                "pendingCount": 0,
                "launchType": "FARGATE",
            }
        ],
        "failures": [],
    }


def target_health(*states: str) -> dict[str, Any]:
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html
    return {
        "TargetHealthDescriptions": [
            {
                "Target": {"Id": f"10.0.0.{i + 10}", "Port": 6432},
                "HealthCheckPort": "6432",
                "TargetHealth": {"State": state}
                | ({} if state == "healthy" else {"Reason": "Target.FailedHealthChecks"}),
            }
            for i, state in enumerate(states)
        ]
    }


def proxy_targets(instance: str, state: str) -> dict[str, Any]:
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBProxyTargets.html
    # (TargetHealth.State: REGISTERING | AVAILABLE | UNAVAILABLE | UNUSED,
    # https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_TargetHealth.html)
    health: dict[str, Any] = {"State": state}
    if state != "AVAILABLE":
        health |= {
            "Reason": "AUTH_FAILURE",
            "Description": "Proxy does not have any registered credentials",
        }
    return {
        "Targets": [
            {
                "TargetArn": f"arn:aws:rds:{REGION}:123456789012:db:{instance}",
                "Endpoint": f"{instance}.abc.{REGION}.rds.amazonaws.com",
                "RdsResourceId": instance,
                "Port": 5432,
                "Type": "RDS_INSTANCE",
                "Role": "READ_WRITE",
                "TargetHealth": health,
            }
        ]
    }


def pending_subscription(topic: str, email: str) -> dict[str, Any]:
    # https://docs.aws.amazon.com/sns/latest/api/API_ListSubscriptionsByTopic.html: an
    # unconfirmed subscription's SubscriptionArn reads "PendingConfirmation".
    return {
        "Subscriptions": [
            {
                "SubscriptionArn": "PendingConfirmation",
                "Owner": "123456789012",
                "Protocol": "email",
                "Endpoint": email,
                "TopicArn": topic,
            }
        ]
    }
