"""ListFunctions, GetFunction and GetFunctionConfiguration through boto3 against the local runtime.

Field names are checked against botocore's own service model (the shapes boto3 parses), values
against the specs the runtime serves, and boto3's waiters and paginator work unchanged.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from tests.fixtures_local import sample_spec

# The response shapes of the three calls, from botocore's service-2.json for Lambda 2015-03-31.
SHAPES = {
    "ListFunctions": "ListFunctionsResponse",
    "GetFunction": "GetFunctionResponse",
    "GetFunctionConfiguration": "FunctionConfiguration",
}
# Lambda's LastModified: ISO 8601 with milliseconds and a +0000 offset, e.g.
# 2019-09-23T18:32:33.857+0000 (API_GetFunctionConfiguration.html, response example).
LAST_MODIFIED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


@pytest.fixture
def runtime(runtime_factory):
    return runtime_factory(
        [
            sample_spec("alpha", "echo", timeout_s=7, memory_mb=256, reserved_concurrency=3),
            sample_spec("beta", "echo", environment={"SAMPLE_VALUE": "b"}),
            sample_spec("gamma", "slow"),
        ],
        region="eu-west-1",
        account_id="123456789012",
    )


def members(client, operation: str) -> set[str]:
    shape = client.meta.service_model.operation_model(operation).output_shape
    assert shape.name == SHAPES[operation]
    return set(shape.members)


def configuration_members(client) -> set[str]:
    return members(client, "GetFunctionConfiguration")


def test_get_function_configuration_returns_the_spec_in_lambda_fields(runtime, client_for):
    client = client_for(runtime)
    config = client.get_function_configuration(FunctionName="alpha")
    config.pop("ResponseMetadata")
    assert set(config) <= configuration_members(client)
    assert config["FunctionName"] == "alpha"
    assert config["FunctionArn"] == "arn:aws:lambda:eu-west-1:123456789012:function:alpha"
    assert (config["Timeout"], config["MemorySize"]) == (7, 256)
    assert config["Handler"] == "sample_functions.echo.handler"
    assert config["Version"] == "$LATEST"
    assert config["State"] == "Active"
    assert config["LastUpdateStatus"] == "Successful"
    assert config["PackageType"] == "Zip"
    assert config["Runtime"].startswith("python3.")
    assert config["Architectures"][0] in {"x86_64", "arm64"}
    assert LAST_MODIFIED.match(config["LastModified"]), config["LastModified"]
    assert config["CodeSize"] > 0
    assert len(config["CodeSha256"]) == 44  # base64 of a SHA-256
    beta = client.get_function_configuration(FunctionName="beta")
    assert beta["Environment"]["Variables"] == {"SAMPLE_VALUE": "b"}
    # The same function named by full ARN, by partial ARN, and with the $LATEST qualifier.
    for name in (
        "arn:aws:lambda:eu-west-1:123456789012:function:alpha",
        "123456789012:function:alpha",
        "alpha:$LATEST",
    ):
        assert client.get_function_configuration(FunctionName=name)["FunctionName"] == "alpha"


def test_get_function_adds_code_location_and_reserved_concurrency(runtime, client_for):
    client = client_for(runtime)
    alpha = client.get_function(FunctionName="alpha")
    alpha.pop("ResponseMetadata")
    assert set(alpha) <= members(client, "GetFunction")
    assert set(alpha["Configuration"]) <= configuration_members(client)
    assert alpha["Configuration"]["FunctionName"] == "alpha"
    assert alpha["Code"]["RepositoryType"] == "S3"
    assert alpha["Code"]["Location"].endswith("/sample_functions")
    assert alpha["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    # Concurrency is present only when a reservation is set (API_GetFunction.html).
    assert "Concurrency" not in client.get_function(FunctionName="beta")


def test_unknown_functions_and_versions_are_resource_not_found(runtime, client_for):
    client = client_for(runtime)
    for call in (client.get_function, client.get_function_configuration):
        with pytest.raises(ClientError) as missing:
            call(FunctionName="nope")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert "function:nope" in missing.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as version:
            call(FunctionName="alpha", Qualifier="7")
        assert version.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_list_functions_pages_through_every_function(runtime, client_for):
    client = client_for(runtime)
    listed = client.list_functions()
    listed.pop("ResponseMetadata")
    assert set(listed) <= members(client, "ListFunctions")
    assert [f["FunctionName"] for f in listed["Functions"]] == ["alpha", "beta", "gamma"]
    assert "NextMarker" not in listed
    for function in listed["Functions"]:
        assert set(function) <= configuration_members(client)
    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}))
    assert [[f["FunctionName"] for f in page["Functions"]] for page in pages] == [
        ["alpha", "beta"],
        ["gamma"],
    ]
    with pytest.raises(ClientError) as bad:
        client.list_functions(Marker="not-a-marker")
    assert bad.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_boto3_waiters_see_the_functions_ready(runtime, client_for):
    client = client_for(runtime)
    # Both poll GetFunction: FunctionActiveV2 until Configuration.State is Active (botocore's
    # waiters-2.json for Lambda).
    client.get_waiter("function_exists").wait(FunctionName="gamma")
    client.get_waiter("function_active_v2").wait(FunctionName="gamma")
