"""Fault drills against a real local stack: nothing acknowledged is lost, nothing hangs.

One stack is shared by the module (started once under a temporary state directory, stopped at
the end). Each drill runs at its small size: a write storm through the Lambda API with a real
fault in the middle, then every acknowledged write is looked up in the table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from functions.rotation import other_user
from slotguard.drills import SCENARIOS, DrillResult, StackHandle, run_drill
from tests.fixtures_local import dev_stack_up

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=50)]


@pytest.fixture(scope="module")
def drill_stack() -> Iterator[StackHandle]:
    with dev_stack_up("slotguard-drills-") as handle:
        yield handle


def _assert_kept_promises(result: DrillResult) -> None:
    assert result.acknowledged > 0
    assert result.lost == 0, result.to_dict()
    assert result.duplicates == 0
    assert result.mismatched == 0
    assert result.rows_found >= result.acknowledged
    assert result.longest_attempt_s <= result.function_timeout_s
    assert "function timeout" not in result.failed_attempts_by_cause
    assert result.abandoned == 0
    assert result.rejected == 0
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert not failed, failed


def test_pgbouncer_kill(drill_stack: StackHandle) -> None:
    pids_before = set(drill_stack.pgbouncer().pids())
    result = run_drill(drill_stack, SCENARIOS["pgbouncer-kill"], small=True)
    _assert_kept_promises(result)
    # A real kill: every process was replaced.
    assert pids_before
    assert not pids_before & set(drill_stack.pgbouncer().pids())
    assert result.recovery.first_success_s is not None
    assert result.recovery.first_success_s <= 5.0


def test_postgres_restart(drill_stack: StackHandle) -> None:
    pid_before = drill_stack.postgres().pid()
    result = run_drill(drill_stack, SCENARIOS["postgres-restart"], small=True)
    _assert_kept_promises(result)
    assert drill_stack.postgres().pid() != pid_before
    assert result.recovery.first_success_s is not None
    assert result.recovery.first_success_s <= 10.0


def test_rotation(drill_stack: StackHandle) -> None:
    # The module's only rotation. A second one on this shared stack would give app_user a new
    # password while instances warm since before the first still hold its old one: they would
    # meet 28P01 and refresh (by design: AWS rotates every few days, an instance lives hours),
    # and the count below would depend on the order the tests ran in.
    before = drill_stack.app_secret()
    # A warm client's connection, opened with the password about to be replaced.
    kept = psycopg.connect(drill_stack.app_conninfo(), autocommit=True)
    try:
        kept.execute("SELECT 1")
        result = run_drill(drill_stack, SCENARIOS["rotation"], small=True)
        # The drill RECONNECTs every process right after the rotation: each server login since
        # uses the keys PgBouncer holds now. Stale keys would fail it and leave this query
        # waiting until query_wait_timeout.
        started = time.monotonic()
        assert kept.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started < 4.0
    finally:
        kept.close()
    _assert_kept_promises(result)
    after = drill_stack.app_secret()
    assert after["password"] != before["password"]
    assert after["scram_verifier"] != before["scram_verifier"]
    # Alternating users (infra/rotation.py): the secret now names the other user, whose new
    # verifier the pooler's auth file holds; the previous user is untouched.
    assert after["username"] == other_user(before["username"], drill_stack.app_user)
    verifiers = drill_stack.pgbouncer().verifiers
    assert verifiers[after["username"]] == after["scram_verifier"]
    if before.get("scram_verifier") and before["username"] in verifiers:
        assert verifiers[before["username"]] == before["scram_verifier"]
    # No login failed, so no function had to fetch the secret again.
    assert result.fault["credential_refreshes"] == 0


def test_saturation(drill_stack: StackHandle) -> None:
    result = run_drill(drill_stack, SCENARIOS["saturation"], small=True)
    _assert_kept_promises(result)
    outcomes = result.fault["outcomes"]
    assert outcomes.get("pooler queue wait timeout", 0) > 0  # there was an excess, refused
    assert set(outcomes) <= {"ok 200", "pooler queue wait timeout"}
    assert result.fault["longest_refusal_s"] < 15
    assert result.peak_db_connections is not None
    assert result.peak_db_connections <= result.db_connection_limit
