"""AWS responses recorded as AWS documents them, for APIs moto does not model.

Every builder names the API reference page its shape follows. Tests feed them to botocore's
Stubber, which also validates each response against the service model.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.stub import Stubber

REGION = "eu-west-1"


def stubbed(service: str, region: str = REGION) -> tuple[Any, Stubber]:
    client = boto3.client(
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
