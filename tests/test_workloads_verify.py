"""`slotguard verify` knows the workloads' roles; the health function reports them for real."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.budget import compute_budget
from slotguard.aws.checks import Status
from tests.aws_stubs import invoke_response, stubbed
from tests.fixtures_functions import FakeLambdaContext, load_function_instance
from tests.test_verify import health_body, one, settings, verify

WORKLOADS = {
    "database": {"max_connections": 112},
    "workloads": {"reports": {"statement_timeout_ms": 20_000, "pool_share_percent": 30}},
    "functions": {
        "api": {"handler": "functions.api.handler"},
        "health": {"handler": "functions.health.handler", "reserved_concurrency": 5},
        "reports": {
            "handler": "functions.reports.handler",
            "workload": "reports",
            "timeout_s": 30,
            "reserved_concurrency": 5,
        },
    },
}


def health_with_roles(body: dict[str, Any], roles: list[str]) -> Any:
    client, stub = stubbed("lambda")
    payload = {"statusCode": 200, "headers": {}, "body": json.dumps(body)}
    stub.add_response(
        "invoke",
        invoke_response(payload),
        {
            "FunctionName": "slotguard-t-health",
            "InvocationType": "RequestResponse",
            "Payload": json.dumps({"roles": roles}).encode(),
        },
    )
    stub.activate()
    return client


def test_verify_checks_each_workload_role_against_the_budget() -> None:
    s = settings(WORKLOADS)
    reports = compute_budget(s).workloads["reports"]
    role = {
        "connection_limit": reports.connection_limit,
        "settings": {
            "statement_timeout": "20000",
            "idle_in_transaction_session_timeout": "10000",
            "lock_timeout": "2000",
        },
    }
    body = health_body(s, roles={reports.role: role})
    check = one(
        list(verify(s, {"lambda": health_with_roles(body, [reports.role])}).workload_roles()),
        "workload reports role",
    )
    assert check.status is Status.PASS, check
    stale = health_body(s, roles={reports.role: {**role, "settings": {"statement_timeout": "5s"}}})
    check = one(
        list(verify(s, {"lambda": health_with_roles(stale, [reports.role])}).workload_roles()),
        "workload reports role",
    )
    assert check.status is Status.FAIL
    assert "statement_timeout 5s (budget: 20000)" in check.found


def test_verify_without_workloads_keeps_its_checks() -> None:
    names = [name for name, _ in verify(settings()).named_checks()]
    assert "workload roles" not in names
    assert "workload roles" in [name for name, _ in verify(settings(WORKLOADS)).named_checks()]


@pytest.mark.integration
def test_health_reports_requested_roles(function_env, functions_stack) -> None:
    function_env(AWS_LAMBDA_FUNCTION_NAME="health")
    module = load_function_instance("health")
    response = module.handler(
        {"roles": ["app_migrator", "no_such_role", "Bad;Name"]}, FakeLambdaContext("health")
    )
    body = json.loads(response["body"])
    assert set(body["roles"]) == {"app_migrator"}
    assert body["roles"]["app_migrator"]["connection_limit"] == 3
    plain = json.loads(module.handler({}, FakeLambdaContext("health"))["body"])
    assert "roles" not in plain
