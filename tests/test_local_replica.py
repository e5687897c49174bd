"""A streaming replica of any local PostgreSQL: copied, streaming, read-only, then promoted."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from slotguard.local import replica as replicas
from slotguard.local.ports import free_port
from tests.scratch import reachable_temp_dir

pytestmark = pytest.mark.integration


def test_a_replica_streams_then_takes_writes_once_promoted(postgres_factory):
    primary = postgres_factory(max_connections=30)
    with primary.connect_admin() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS r (n int)")
        conn.execute("INSERT INTO r VALUES (1)")
    base = reachable_temp_dir("slotguard-replica-")
    standby = replicas.start_streaming_replica(primary, base / "replica", free_port())
    try:
        assert standby.settings.port != primary.settings.port
        assert replicas.in_recovery(standby)
        with primary.connect_admin() as conn:
            conn.execute("INSERT INTO r VALUES (2)")
        replicas.wait_caught_up(primary, "replica")
        # The same CA and master password: a client of the primary verifies and logs in as is.
        with standby.connect_admin() as conn:
            assert conn.execute("SELECT count(*) FROM r").fetchone() == (2,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO r VALUES (3)")
            row = conn.execute("SHOW max_connections").fetchone()
        assert row == ("30",)
        assert replicas.promote(standby) < 30
        assert not replicas.in_recovery(standby)
        with standby.connect_admin() as conn:
            conn.execute("INSERT INTO r VALUES (3)")
            assert conn.execute("SELECT count(*) FROM r").fetchone() == (3,)
    finally:
        replicas.remove(standby)
        shutil.rmtree(base, ignore_errors=True)
    assert not standby.root.exists()
