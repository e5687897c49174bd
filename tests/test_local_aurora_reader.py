"""The local target rehearses an Aurora stack with its reader: a streaming replica serves the
read pool (issue 21), so a read through `<db>_ro` lands on a hot standby and never writes."""

from __future__ import annotations

import shutil
import time

import psycopg
import pytest

from slotguard.local.control import down, up
from slotguard.local.replica import ReplicaError
from slotguard.local.stack import StackPlan
from slotguard.local.state import STATE_DIR_ENV, StackRecord, marked_processes
from tests.scratch import reachable_temp_dir

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=30)]


def _connect(record: StackRecord, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=record.ports.pgbouncer,
        user="app_user",
        password=record.app_password,
        dbname=dbname,
        sslmode="verify-full",
        sslrootcert=record.ca_file,
        autocommit=True,
        connect_timeout=10,
    )


def test_aurora_stack_reads_through_a_streaming_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    base = reachable_temp_dir("aurora-reader")
    monkeypatch.setenv(STATE_DIR_ENV, str(base))
    plan = StackPlan.load("aurora", base=base)
    assert plan.budget.read_pool is not None
    alias = plan.budget.read_pool.database_alias
    try:
        record = up(plan).record
        assert record.ports.reader is not None
        assert record.ports.reader not in {record.ports.postgres, record.ports.pgbouncer}
        marker = f"reader-{time.time_ns()}"
        with _connect(record, record.database) as writer:
            row = writer.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row == (False,)
            writer.execute("INSERT INTO items (name) VALUES (%s)", (marker,))
        with _connect(record, alias) as reader:
            row = reader.execute(
                "SELECT pg_is_in_recovery(), current_setting('port')::int"
            ).fetchone()
            assert row == (True, record.ports.reader)
            deadline = time.monotonic() + 30
            while True:  # replication is asynchronous: the row arrives within moments
                found = reader.execute(
                    "SELECT count(*) FROM items WHERE name = %s", (marker,)
                ).fetchone()
                if found == (1,):
                    break
                if time.monotonic() > deadline:
                    raise ReplicaError("the write never reached the read pool")
                time.sleep(0.1)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as refused:
                reader.execute("INSERT INTO items (name) VALUES ('refused')")
            assert refused.value.sqlstate == "25006"
    finally:
        down(plan)
    assert marked_processes(plan.paths.root) == []
    assert not (plan.paths.reader / "pgdata" / "postmaster.pid").exists()
    shutil.rmtree(base, ignore_errors=True)


def test_a_stack_without_readers_gets_no_reader_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev has no read pool: its ports file keeps no reader, as before."""
    base = reachable_temp_dir("aurora-reader-dev")
    monkeypatch.setenv(STATE_DIR_ENV, str(base))
    plan = StackPlan.load("dev", base=base)
    plan.paths.prepare()
    assert plan.budget.read_pool is None
    assert plan.paths.ports().reader is None
    shutil.rmtree(base, ignore_errors=True)
