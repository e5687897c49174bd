"""The database moving under the pooler, under the write storm: failover and a major upgrade.

One dev stack for the module (its own temporary state directory and free ports). Each drill runs
at its small size and must keep the drills' promises (0 lost, 0 duplicated, every request
answered); afterwards the stack is as the drill found it: its own server, on its own port, the
writer, behind the pooler.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from slotguard.drills import SCENARIOS, DrillResult, StackHandle, run_drill
from slotguard.drills.database_moves import GREEN_DIR, REPLICA_DIR, write_outage_s
from slotguard.drills.storm import Attempt
from slotguard.local import replica
from tests.fixtures_local import dev_stack_up

# A stack of its own with a replica or a green server beside it: handed out first under xdist.
pytestmark = pytest.mark.heavy(seconds=30)


def _ok(end: float) -> Attempt:
    return Attempt("k", end - 0.01, end, 201, None)


def _failed(end: float) -> Attempt:
    return Attempt("k", end - 0.01, end, 500, "other")


def test_the_write_outage_is_the_longest_gap_between_acknowledged_writes_after_the_fault():
    attempts = [_ok(1.0), _ok(2.0), _failed(2.5), _ok(5.0), _ok(5.1), _ok(9.0)]
    # From the last write before the fault (2.0) to the next one (5.0); 5.1 -> 9.0 is longer
    # but is still after the fault, so it counts too: the longest is 3.9.
    assert write_outage_s(attempts, since=3.0, until=10.0) == pytest.approx(3.9)
    assert write_outage_s(attempts[:4], since=3.0, until=10.0) == pytest.approx(3.0)
    # Nothing acknowledged after the fault: the outage runs to the end of the storm.
    assert write_outage_s(attempts[:3], since=3.0, until=10.0) == pytest.approx(8.0)


@pytest.fixture(scope="module")
def moves_stack() -> Iterator[StackHandle]:
    with dev_stack_up("slotguard-moves-") as handle:
        yield handle


def _assert_kept_promises(result: DrillResult) -> None:
    assert result.acknowledged > 0
    assert result.lost == 0, result.to_dict()
    assert result.duplicates == 0
    assert result.mismatched == 0
    assert result.abandoned == 0
    assert result.rejected == 0
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert not failed, failed


def _served_by(handle: StackHandle) -> tuple[int, bool]:
    """(the port of the server behind the pooler, whether it is in recovery), as app_user."""
    with psycopg.connect(handle.app_conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('port')::int, pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


@pytest.mark.integration
def test_failover(moves_stack: StackHandle) -> None:
    pid_before = moves_stack.postgres().pid()
    result = run_drill(moves_stack, SCENARIOS["failover"], small=True)
    _assert_kept_promises(result)
    fault = result.fault
    assert fault["promoted_writes"] is True
    assert fault["replica_port"] != moves_stack.record.ports.postgres
    assert 0 < fault["write_outage_s"] <= 10.0
    # Failed back: the stack's own server is the writer again, on its port, without the
    # drill's synchronous standby setting; the replica is gone.
    server = moves_stack.postgres()
    assert server.pid() != pid_before
    assert _served_by(moves_stack) == (moves_stack.record.ports.postgres, False)
    assert not replica.in_recovery(server)
    with server.connect_admin() as conn:
        assert conn.execute("SHOW synchronous_standby_names").fetchone() == ("",)
    assert not (moves_stack.plan.paths.root / REPLICA_DIR).exists()


@pytest.mark.integration
def test_major_upgrade(moves_stack: StackHandle) -> None:
    result = run_drill(moves_stack, SCENARIOS["major-upgrade"], small=True)
    _assert_kept_promises(result)
    fault = result.fault
    assert fault["blue_version"] // 10000 == 16
    assert fault["green_version"] // 10000 == 17
    assert fault["writer_after"] // 10000 == 17
    assert fault["switchover"]["sessions_terminated"] > 0  # PgBouncer's server connections
    assert fault["acknowledged_on_green"] > 0
    assert fault["rows_on_green"] >= result.acknowledged
    assert 0 < fault["write_outage_s"] <= 10.0
    # Back on blue (16), writable, with every row green took (reconciled on blue above).
    assert _served_by(moves_stack) == (moves_stack.record.ports.postgres, False)
    with moves_stack.postgres().connect_admin() as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    assert int(row[0]) // 10000 == 16
    assert not (moves_stack.plan.paths.root / GREEN_DIR).exists()
