"""The storm command's targets without a running stack: Pulumi outputs, wiring choice, errors."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slotguard.cli import app
from slotguard.local.state import STATE_DIR_ENV
from slotguard.local.targets import (
    TargetError,
    aws_target,
    local_function,
    parse_outputs,
    payloads,
    pulumi_outputs,
    sibling,
)
from slotguard.storm.traffic import Traffic

# A fork's function and event, not the kit's example: nothing here depends on a name.
ORDERS = Traffic("orders", {"order": "o-{index}", "items": [{"sku": "s-{index}"}]}, "test")

OUTPUTS = {
    "pooler_kind": "pgbouncer",
    "function_names": {
        "api": "slotguard-dev-api-1a2b3c",
        "orders": "slotguard-dev-orders-9f8e",
        "health": "slotguard-dev-health-4d5e",
    },
    "max_connections": 25,
    "pooler_ceiling": 19,
}


def test_outputs_are_read_from_pulumi_json():
    calls = []

    def runner(command):
        calls.append(command)
        return json.dumps(OUTPUTS)

    outputs = pulumi_outputs("dev", runner=runner)
    assert outputs["function_names"]["api"] == "slotguard-dev-api-1a2b3c"
    assert calls == [["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "dev"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"pooler_kind": "pgbouncer"}), "no `function_names` output"),
    ],
)
def test_bad_outputs_are_refused_by_name(text, message):
    with pytest.raises(TargetError, match=message):
        parse_outputs(text, "dev")


def test_aws_target_fires_at_the_chosen_function_with_the_budget_limits():
    sentinel = object()
    target = aws_target(
        "dev",
        ["pooled"],
        burst=10,
        region="eu-west-1",
        outputs=OUTPUTS,
        client=sentinel,
        traffic=ORDERS,
    )
    (wiring,) = target.wirings
    assert wiring.function_name == "slotguard-dev-orders-9f8e"
    assert wiring.client is sentinel
    assert wiring.payload(3) == {"order": "o-3", "items": [{"sku": "s-3"}]}
    assert target.limits is not None
    assert (target.limits.max_connections, target.limits.ceiling) == (25, 19)
    assert target.observer is None


def test_aws_target_refuses_the_local_only_wirings():
    with pytest.raises(TargetError, match="--wiring pooled"):
        aws_target(
            "dev", ["pooled", "direct"], burst=10, region=None, outputs=OUTPUTS, traffic=ORDERS
        )


def test_aws_target_refuses_a_function_the_deployed_stack_lacks():
    missing = Traffic("reports", {}, "test")
    with pytest.raises(TargetError, match="has no function 'reports'"):
        aws_target("dev", ["pooled"], burst=10, region=None, outputs=OUTPUTS, traffic=missing)


def test_missing_pulumi_cli_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    result = CliRunner().invoke(app, ["storm", "--target", "aws", "--wiring", "pooled"])
    assert result.exit_code == 1
    assert "Pulumi CLI is not installed" in result.output


def test_storm_on_a_stack_that_is_not_running_says_how_to_start_it(monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="slotguard-none-"))
    monkeypatch.setenv(STATE_DIR_ENV, str(base))
    try:
        result = CliRunner().invoke(app, ["storm", "--burst", "5"], env={"COLUMNS": "200"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result.exit_code == 1
    assert "slotguard up --stack dev" in result.output


@pytest.mark.parametrize(
    ("wiring", "retries", "query_ms", "expected"),
    [
        ("pooled", True, 0, "orders"),
        ("pooled", False, 0, "orders-noretry"),
        ("direct", True, 0, "orders-direct"),
        ("direct", False, 0, "orders-naive"),
        ("naive", True, 0, "orders-naive"),
        ("pooled", True, 50, "probe"),
        ("direct", True, 50, "probe-direct"),
        ("naive", True, 50, "probe-naive"),
    ],
)
def test_each_wiring_maps_to_its_local_function(wiring, retries, query_ms, expected):
    assert local_function(wiring, function="orders", retries=retries, query_ms=query_ms) == expected


def test_frozen_instances_live_in_the_sibling_function():
    assert sibling("orders", "orders") == "probe"
    assert sibling("probe-direct", "orders") == "orders-direct"
    assert sibling("orders-naive", "orders") == "probe-naive"


def test_payloads_follow_the_query_duration():
    assert payloads(80, ORDERS.payload)(1) == {"query_ms": 80}
    assert payloads(0, ORDERS.payload)(4)["order"] == "o-4"
    with pytest.raises(TargetError, match="--event"):
        payloads(0)


def test_a_storm_that_ran_nothing_exits_1_with_the_reason_first(monkeypatch):
    from slotguard.commands import storm as storm_command
    from slotguard.local.targets import StormTarget
    from slotguard.storm import StormReport

    reason = "RuntimeAdminError: Function not found: arn:aws:lambda:eu-west-1:0:function:[api]"
    monkeypatch.setattr(
        storm_command, "_target", lambda **_kwargs: StormTarget("local:dev", [], None)
    )
    monkeypatch.setattr(
        storm_command,
        "run_target",
        lambda *_args, **_kwargs: StormReport(wirings=[], skipped={"pooled": reason}),
    )
    result = CliRunner().invoke(app, ["storm", "--wiring", "pooled"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == f"error: pooled not run: {reason}"
    assert len(lines) == 1  # no empty table after it
