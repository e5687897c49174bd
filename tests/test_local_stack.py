"""The local target end to end: `up` (twice), boto3 invokes, status, a small storm, `down`.

One stack is shared by the module (started once under a temporary state directory); one test
stops it and checks that no process of it is left, and a test that runs after it (the order is
random) brings it back up.
"""

from __future__ import annotations

import json
import shutil
import time

import boto3
import psutil
import pytest
from botocore.config import Config
from typer.testing import CliRunner

from pgbouncer import metrics
from slotguard.cli import app
from slotguard.commands.storm import pooled_problems, run_target
from slotguard.local.control import down, running_record, up
from slotguard.local.stack import StackPlan
from slotguard.local.state import STATE_DIR_ENV, marked_processes, read_pid
from slotguard.local.targets import local_target
from slotguard.storm.traffic import choose_traffic
from tests.scratch import reachable_temp_dir

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=35)]

BURST = 200


@pytest.fixture(scope="module")
def state_base():
    path = reachable_temp_dir("slotguard-stack-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_DIR_ENV, str(path))
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def started_stack(state_base):
    plan = StackPlan.load("dev", base=state_base)
    result = up(plan)
    assert not result.already_running
    yield plan
    down(plan)


@pytest.fixture
def stack(started_stack):
    """The module's stack, running: brought back up when a test before this one took it down."""
    up(started_stack)
    return started_stack


def stack_pids(plan: StackPlan) -> set[int]:
    """The supervisor and every descendant, PgBouncer's processes and the postmaster's tree."""
    pids: set[int] = set()
    roots = [
        read_pid(plan.paths.supervisor_pid),
        read_pid(plan.paths.postgres / "pgdata" / "postmaster.pid"),
    ]
    roots += [read_pid(p) for p in plan.paths.pgbouncer.glob("pgbouncer-*.pid")]
    for pid in filter(None, roots):
        process = psutil.Process(pid)
        pids.add(pid)
        pids.update(child.pid for child in process.children(recursive=True))
    return pids


def test_up_starts_every_part_with_the_budget(stack):
    record = running_record(stack.paths)
    assert record is not None
    budget = stack.budget
    import psycopg

    from slotguard.local.stack import master_conninfo

    with psycopg.connect(master_conninfo(record)) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('max_connections', 'superuser_reserved_connections', 'ssl',"
                "  'idle_in_transaction_session_timeout')"
            ).fetchall()
        )
        role = conn.execute(
            "SELECT rolconnlimit, rolconfig FROM pg_roles WHERE rolname = 'app_user'"
        ).fetchone()
    assert int(settings["max_connections"]) == budget.max_connections == 25
    assert int(settings["superuser_reserved_connections"]) == budget.reserved_connections
    assert int(settings["idle_in_transaction_session_timeout"]) == (
        budget.database_idle_in_transaction_ms
    )
    assert settings["ssl"] == "on"
    assert role is not None
    assert role[0] == budget.app_user.connection_limit
    au = budget.app_user
    assert f"statement_timeout={au.statement_timeout_ms}" in role[1]
    assert (
        f"idle_in_transaction_session_timeout={au.idle_in_transaction_session_timeout_ms}"
        in (role[1])
    )
    assert f"lock_timeout={au.lock_timeout_ms}" in role[1]
    pb = budget.pgbouncer
    assert pb is not None
    alive = [read_pid(p) for p in sorted(stack.paths.pgbouncer.glob("pgbouncer-*.pid"))]
    assert len([pid for pid in alive if pid and psutil.pid_exists(pid)]) == pb.processes
    ini = (stack.paths.pgbouncer / "pgbouncer-1.ini").read_text()
    assert f"default_pool_size = {pb.pool_size}" in ini
    assert f"max_db_connections = {pb.max_db_connections}" in ini
    assert "so_reuseport = 1" in ini


def test_second_up_says_already_running(stack):
    result = CliRunner().invoke(app, ["up", "--stack", "dev"])
    assert result.exit_code == 0, result.output
    assert "already running" in result.output


def test_boto3_invokes_the_local_functions(stack):
    record = running_record(stack.paths)
    assert record is not None
    client = boto3.client(
        "lambda",
        endpoint_url=record.runtime_url,
        region_name=record.region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )
    health = client.invoke(FunctionName="health", Payload=b"{}")
    document = json.loads(health["Payload"].read())
    assert document["statusCode"] == 200
    body = json.loads(document["body"])
    assert body["connections"]["max"] == 25
    event = choose_traffic(stack.settings).payload(7)  # the storm function's sample event
    created = client.invoke(FunctionName="api", Payload=json.dumps(event).encode())
    answer = json.loads(created["Payload"].read())
    assert answer["statusCode"] == 201, answer
    assert json.loads(answer["body"])["name"] == "storm-7"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="no-such-function", Payload=b"{}")


def test_exporter_publishes_pooler_metrics_to_the_local_cloudwatch(stack):
    record = running_record(stack.paths)
    assert record is not None
    cloudwatch = boto3.client(
        "cloudwatch",
        endpoint_url=record.aws_url,
        region_name=record.region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    deadline = time.monotonic() + 15
    names: set[str] = set()
    while time.monotonic() < deadline and metrics.CLIENT_WAITING.name not in names:
        listed = cloudwatch.list_metrics(Namespace=metrics.NAMESPACE)["Metrics"]
        names = {m["MetricName"] for m in listed}
        time.sleep(0.5)
    assert metrics.CLIENT_WAITING.name in names
    assert metrics.SERVER_CONNECTIONS.name in names
    dimensions = {d["Name"]: d["Value"] for d in listed[0]["Dimensions"]}
    assert dimensions["Stack"] == "dev"


def test_status_shows_health_connections_pools_and_alarms(stack):
    result = CliRunner().invoke(app, ["status", "--stack", "dev"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "health: 200 ok" in result.output
    assert "max_connections 25 (pooler ceiling 17)" in result.output
    assert "SHOW POOLS" in result.output
    assert "app_user" in result.output
    assert "db-connections-bypass" in result.output


def test_small_pooled_storm_has_no_failures_and_stays_under_the_ceiling(stack):
    target = local_target(stack, ["pooled"], burst=BURST)
    try:
        report = run_target(target, BURST, show_progress=False)
    finally:
        target.close()
    (pooled,) = report.wirings
    assert pooled.invocations == BURST
    assert pooled.failed_total == 0, pooled.failed
    assert pooled.succeeded == BURST
    assert pooled.peak_db_connections is not None
    assert pooled.peak_db_connections <= stack.budget.pooler_ceiling + stack.budget.admin_margin
    assert pooled.within_ceiling is True
    assert pooled_problems(report) == []


def test_naive_wiring_with_slow_queries_runs_out_of_slots_and_the_pooler_recovers(stack):
    burst = 60
    target = local_target(stack, ["naive"], burst=burst, query_ms=400, warm=False)
    try:
        report = run_target(target, burst, show_progress=False)
    finally:
        target.close()  # closes what the direct instances still hold
    (naive,) = report.wirings
    assert naive.function_name == "probe-naive"
    # At most app_user's CONNECTION LIMIT (17) hold a connection at once; no retries.
    too_many = naive.failed.get("too many connections", 0)
    assert too_many >= burst - stack.budget.app_user.connection_limit - 5
    assert naive.peak_db_connections is not None
    assert naive.peak_db_connections >= stack.budget.app_user.connection_limit
    ok = [r for r in naive.records if r.outcome == "ok"]
    assert ok
    assert all(r.latency_ms >= 400 for r in ok)
    result = CliRunner().invoke(app, ["status", "--stack", "dev"], env={"COLUMNS": "200"})
    assert "health: 200 ok" in result.output  # the pooler got its slots back


def test_down_leaves_no_process_of_the_stack(stack):
    pids = stack_pids(stack)
    assert len(pids) >= 6  # supervisor, runtime (+ workers), moto, PgBouncer x2, postmaster...
    result = down(stack)
    assert result.was_running
    still = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert still == []
    assert marked_processes(stack.paths.root) == []
    assert running_record(stack.paths) is None
    again = CliRunner().invoke(app, ["down", "--stack", "dev"])
    assert "was not running" in again.output
