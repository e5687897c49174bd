"""Pooler operations on a real local stack: rolling restart, scale out and in, cancel requests.

Each runs under the write storm with reconciliation (nothing acknowledged lost, no duplicate,
every request answered) and holds the server connections of old and new PgBouncer processes to
the budget's planned peak.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slotguard.drills import SCENARIOS, DrillResult, StackHandle, run_drill
from tests.fixtures_local import dev_stack_up

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=45)]


@pytest.fixture(scope="module")
def ops_stack() -> Iterator[StackHandle]:
    with dev_stack_up("slotguard-pooler-ops-") as handle:
        yield handle


def _passed(result: DrillResult) -> None:
    assert result.acknowledged > 0
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.abandoned == 0
    assert sum(result.failed_attempts_by_cause.values()) == 0, result.failed_attempts_by_cause
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert not failed, failed


def _stack_as_found(handle: StackHandle) -> None:
    pooler = handle.pgbouncer()
    processes = pooler.settings.processes
    assert len(pooler.pids()) == processes
    # The spare slot's process is gone and no ini lists it as a peer any more.
    assert not (pooler.root / f"pgbouncer-{processes + 1}.pid").exists()
    for index in range(processes):
        peers = Path(pooler.ini_path(index)).read_text().split("[peers]")[1]
        assert len(peers.strip().splitlines()) == processes


def test_rolling_restart_replaces_every_process(ops_stack: StackHandle) -> None:
    before = set(ops_stack.pgbouncer().pids())
    result = run_drill(ops_stack, SCENARIOS["pooler-rolling-restart"], small=True)
    _passed(result)
    assert before
    assert not before & set(ops_stack.pgbouncer().pids()), "every old process was replaced"
    peak = result.fault["server_connections_peak"]
    assert peak <= ops_stack.plan.budget.pooler_planned_max
    _stack_as_found(ops_stack)


def test_scale_out_and_in(ops_stack: StackHandle) -> None:
    out = run_drill(ops_stack, SCENARIOS["pooler-scale-out"], small=True)
    _passed(out)
    assert out.fault["new_process_clients"] > 0
    _stack_as_found(ops_stack)
    scale_in = run_drill(ops_stack, SCENARIOS["pooler-scale-in"], small=True)
    _passed(scale_in)
    assert scale_in.fault["clients_when_stopped"] > 0
    # The instances whose connections the stopped process closed answered again, elsewhere.
    assert scale_in.fault["thawed"] > 0
    assert scale_in.fault["thawed_failed"] == 0
    _stack_as_found(ops_stack)


def test_cancels_reach_statements_on_every_process(ops_stack: StackHandle) -> None:
    if ops_stack.pgbouncer().settings.version < (1, 19):
        pytest.skip("PgBouncer before 1.19 has no peer_id: cancels on a sibling are lost")
    result = run_drill(ops_stack, SCENARIOS["cancel"], small=True)
    _passed(result)
    statements = result.fault["statements"]
    assert {s["process"] for s in statements} == set(
        range(1, ops_stack.pgbouncer().settings.processes + 1)
    )
    assert all(s["sqlstate"] == "57014" for s in statements)
