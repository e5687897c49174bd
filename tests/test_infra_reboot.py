"""The reboot step for pending-reboot parameters, against RDS responses shaped as AWS documents.

DescribeDBInstances (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBInstances.html)
answers each instance's `DBInstanceStatus` and its `DBParameterGroups[].ParameterApplyStatus`
(`applying`, `pending-reboot` or `in-sync`,
https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBParameterGroupStatus.html);
RebootDBInstance (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_RebootDBInstance.html)
restarts it. botocore's Stubber checks every request and response against the RDS API model.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from infra.offline import run_offline, variant_settings
from infra.reboot import RebootError, apply_pending_reboot, rerun_bootstrap
from infra.settings import settings_from_mapping

ID = "slotguard-dev-instance-abc1234"


def _instance(status: str, apply: str) -> dict[str, Any]:
    return {
        "DBInstances": [
            {
                "DBInstanceIdentifier": ID,
                "DBInstanceStatus": status,
                "DBParameterGroups": [
                    {"DBParameterGroupName": "slotguard-dev-params", "ParameterApplyStatus": apply}
                ],
            }
        ]
    }


def _client() -> Any:
    return boto3.client(
        "rds", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def _describe(stub: Stubber, status: str, apply: str) -> None:
    stub.add_response(
        "describe_db_instances", _instance(status, apply), {"DBInstanceIdentifier": ID}
    )


def test_a_pending_parameter_reboots_and_waits_until_in_sync() -> None:
    client = _client()
    slept: list[float] = []
    with Stubber(client) as stub:
        _describe(stub, "modifying", "applying")  # RDS first applies the changed group
        _describe(stub, "available", "pending-reboot")
        stub.add_response(
            "reboot_db_instance",
            {"DBInstance": {"DBInstanceIdentifier": ID, "DBInstanceStatus": "rebooting"}},
            {"DBInstanceIdentifier": ID},
        )
        _describe(stub, "rebooting", "pending-reboot")
        _describe(stub, "available", "in-sync")
        assert apply_pending_reboot(client, ID, poll_s=1, sleep=slept.append) is True
        stub.assert_no_pending_responses()
    assert slept == [1, 1]


def test_an_in_sync_instance_is_left_running() -> None:
    client = _client()
    with Stubber(client) as stub:
        _describe(stub, "available", "in-sync")
        assert apply_pending_reboot(client, ID, sleep=lambda _: None) is False
        stub.assert_no_pending_responses()


def test_an_instance_that_never_settles_fails_the_step_with_its_state() -> None:
    client = _client()
    with Stubber(client) as stub:
        for _ in range(3):
            _describe(stub, "modifying", "applying")
        with pytest.raises(RebootError, match=r"still modifying with parameters \['applying'\]"):
            apply_pending_reboot(client, ID, timeout_s=2, poll_s=1, sleep=lambda _: None)


def test_the_bootstrap_runs_again_after_the_reboot() -> None:
    # Invoke (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html): a handler's error
    # comes back with `FunctionError` set and the error document as the payload.
    client = boto3.client(
        "lambda", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    event = {"app_user": {"name": "app_user", "connection_limit": 19}}
    expected = {
        "FunctionName": "slotguard-dev-bootstrap",
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(event, sort_keys=True).encode(),
    }
    report = json.dumps({"connection_limit": 19, "waiting_for_restart": False}).encode()
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(report), len(report))},
            expected,
        )
        assert rerun_bootstrap(client, "slotguard-dev-bootstrap", event)["connection_limit"] == 19
        error = b'{"errorMessage": "boom"}'
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": StreamingBody(io.BytesIO(error), len(error)),
            },
            expected,
        )
        with pytest.raises(RebootError, match="slotguard-dev-bootstrap failed after the reboot"):
            rerun_bootstrap(client, "slotguard-dev-bootstrap", event)


def test_dev_reboots_after_the_first_bootstrap_prod_leaves_it_to_the_window() -> None:
    run = run_offline(variant_settings("dev"))
    reboot = run.one("pulumi-python:dynamic:Resource")
    first = run.one("aws:lambda/invocation:Invocation")
    group = run.one("aws:rds/parameterGroup:ParameterGroup")
    assert run.depends_on(reboot, first)
    assert run.depends_on(reboot, group)
    # The re-run's event is a trigger only: the bootstrap applies its own configuration, the
    # same settings (a stack's existing reboot resource keeps its event, so nothing changes).
    bootstrap = run.one("aws:lambda/function:Function", "-bootstrap-function")
    config = bootstrap.input("environment")["variables"]["BOOTSTRAP_CONFIG"]
    assert json.loads(reboot.input("event")) == json.loads(config)
    assert reboot.input("function") == "slotguard-dev-bootstrap"
    assert reboot.parent == run.one("slotguard:database:Database").urn
    prod = run_offline(variant_settings("prod"))
    assert not prod.of_type("pulumi-python:dynamic:Resource")
    assert variant_settings("prod").reboot_for_parameters is False
    forced = settings_from_mapping({"database": {"reboot_for_parameters": False}}, stack="dev")
    assert forced.reboot_for_parameters is False
