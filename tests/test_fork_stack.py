"""A fork's own stack on the local target: functions not called `api`, its own event, its limits.

The stack file lives in a scratch project directory and names `orders` (the storm function, with
a reserved concurrency of 20) and `status`; nothing about it is the kit's `dev` stack. One stack
is shared by the module and stopped by the last test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from slotguard.cli import app
from slotguard.local.control import down, up
from slotguard.local.stack import StackPlan
from slotguard.local.state import STATE_DIR_ENV
from tests.scratch import reachable_temp_dir

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=30)]

ROOT = Path(__file__).resolve().parent.parent
STACK = "fork"
RESERVED = 20


def fork_config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    config = document["config"]
    config["slotguard:functions"] = {
        "status": {"handler": "functions.health.handler", "reserved_concurrency": 5},
        "orders": {  # the kit's own handler, so the test holds in a fork without the examples
            "handler": "functions.health.handler",
            "url": True,
            "reserved_concurrency": RESERVED,
        },
    }
    config["slotguard:storm_function"] = "orders"
    return document


ORDER_EVENT = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/items",
    "rawQueryString": "",
    "headers": {"content-type": "application/json"},
    "requestContext": {
        "http": {"method": "POST", "path": "/items", "sourceIp": "127.0.0.1"},
        "requestId": "order-{index}",
    },
    "body": '{"name": "order-{index}", "quantity": 3}',
    "isBase64Encoded": False,
}


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    root = reachable_temp_dir("slotguard-fork-")
    (root / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(fork_config()))
    (root / "order.json").write_text(json.dumps(ORDER_EVENT))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_DIR_ENV, str(root / "state"))
        yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(project: Path) -> Iterator[StackPlan]:
    plan = StackPlan.load(STACK, project, base=project / "state")
    up(plan)
    yield plan
    down(plan)


def run(project: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, [*args, "--stack", STACK, "--project-dir", str(project)], env={"COLUMNS": "200"}
    )


def test_storm_bursts_the_forks_function_with_its_event_within_its_limit(stack, project):
    out = project / "orders.json"
    burst = RESERVED + 15
    result = run(
        project,
        "storm",
        "--function",
        "orders",
        "--event",
        str(project / "order.json"),
        "--wiring",
        "pooled",
        "--burst",
        str(burst),
        "--check",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # Warmed up to what the function may run, and the rest said to be throttled, as Lambda does.
    assert f"warmed up to {RESERVED}; a burst of {burst} is throttled beyond {RESERVED}" in text
    (pooled,) = json.loads(out.read_text())["wirings"]
    assert pooled["function_name"] == "orders"
    assert pooled["failed"] == 0
    assert pooled["succeeded"] + pooled["throttled"] == burst


def test_wiring_all_derives_direct_and_naive_from_the_chosen_function(stack, project):
    out = project / "all.json"
    result = run(
        project, "storm", "--event", str(project / "order.json"), "--burst", "8", "--json", str(out)
    )
    assert result.exit_code == 0, result.output
    functions = [w["function_name"] for w in json.loads(out.read_text())["wirings"]]
    assert functions == ["orders", "orders-direct", "orders-naive"]  # storm_function's default


def test_a_function_without_an_event_exits_1_saying_so_first(stack, project):
    result = run(project, "storm", "--function", "status", "--burst", "5")
    assert result.exit_code == 1
    first = result.output.strip().splitlines()[0]
    assert first.startswith("error: function 'status' has no sample event"), result.output
    assert "functions/health.event.json" in " ".join(result.output.split())


def test_a_misspelt_function_is_named_with_its_fix(stack, project):
    result = run(project, "storm", "--function", "order", "--burst", "5")
    assert result.exit_code == 1
    assert "did you mean 'orders'?" in result.output


def test_drills_without_their_traffic_function_say_it_is_missing(stack, project):
    result = run(project, "drill", "pgbouncer-restart", "--small", "--function", "nosuch")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "has no function 'nosuch' to send the drills' writes through" in text
    assert "FAILED" not in text  # no drill ran, so no outage is reported


def test_up_after_an_edited_stack_file_says_what_changed_and_what_to_run(stack, project):
    path = project / f"Pulumi.{STACK}.yaml"
    original = path.read_text()
    edited = fork_config()
    edited["config"]["slotguard:functions"]["status"]["reserved_concurrency"] = 6
    path.write_text(yaml.safe_dump(edited))
    try:
        result = run(project, "up")
    finally:
        path.write_text(original)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "changed: functions.status.reserved_concurrency" in text
    assert f"slotguard up --stack {STACK} --restart" in text
    again = run(project, "up")
    assert again.exit_code == 0, again.output
    assert "already running" in again.output
