"""Cancel requests with several PgBouncer processes on one port: `peer_id` + `[peers]` make them
reach the process that holds the statement; without peering some are lost.

PgBouncer doc/config.md, section [peers] (1.19+): "Cancellation requests are sent over different
TCP connections than the query they are cancelling, so a TCP load balancer might send the
cancellation request connection to a different process than the one that it was meant for. By
peering them these cancellation requests eventually end up at the right process." `so_reuseport`
is such a balancer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from slotguard.local.pgbouncer import LocalPgBouncer
from slotguard.local.postgres import LocalPostgres

pytestmark = pytest.mark.integration

PASSWORD = "peering-secret-1"
CLIENTS = 12
SLEEP_S = 4
REACHED_WITHIN_S = 1.5


def _wait_sent(
    postgres: LocalPostgres, pooler: LocalPgBouncer, count: int, timeout_s: float = 10.0
) -> None:
    """Until all `count` statements run on the server or wait in a pool (so_reuseport may give
    one process more clients than its pool): a cancel sent before its statement arrived would
    be "lost" for a reason that has nothing to do with peering."""
    deadline = time.monotonic() + timeout_s
    with postgres.connect_admin() as admin:
        while True:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_user'"
                " AND state = 'active' AND query LIKE 'SELECT pg_sleep(%%'"
            ).fetchone()
            running = row[0] if row else 0
            waiting = sum(
                int(str(r["cl_waiting"]))
                for index in range(pooler.settings.processes)
                for r in pooler.show("POOLS", process=index)
                if r["database"] != "pgbouncer"
            )
            if running + waiting >= count:
                return
            assert time.monotonic() < deadline, f"{running} running, {waiting} waiting of {count}"
            time.sleep(0.05)


def _cancel_all(postgres: LocalPostgres, pooler: LocalPgBouncer) -> list[float]:
    """Seconds from each cancel to the end of its statement (SLEEP_S-ish when it was lost)."""
    conns: list[psycopg.Connection[Any]] = [
        psycopg.connect(pooler.conninfo("app_user", PASSWORD), autocommit=True)
        for _ in range(CLIENTS)
    ]
    ended: dict[int, float] = {}
    errors: dict[int, str | None] = {}

    def run(index: int) -> None:
        try:
            conns[index].execute(f"SELECT pg_sleep({SLEEP_S})")
            errors[index] = None
        except psycopg.Error as exc:
            errors[index] = exc.sqlstate
        ended[index] = time.monotonic()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    _wait_sent(postgres, pooler, CLIENTS)
    cancelled: dict[int, float] = {}
    for index, conn in enumerate(conns):
        cancelled[index] = time.monotonic()
        conn.cancel_safe(timeout=5)
    for thread in threads:
        thread.join(SLEEP_S + 5)
    for conn in conns:
        conn.close()
    return [ended[i] - cancelled[i] for i in range(CLIENTS)]


def _needs_peering(pooler: LocalPgBouncer) -> None:
    if pooler.settings.version < (1, 19):
        pytest.skip("PgBouncer before 1.19 has no peer_id; put the pinned build first on PATH")


def test_peered_processes_forward_every_cancel(postgres, pgbouncer_factory):
    pooler = pgbouncer_factory(postgres, users={"app_user": PASSWORD}, pool_size=8, processes=2)
    _needs_peering(pooler)
    config = {r["key"]: r["value"] for r in pooler.show("CONFIG", process=1)}
    assert config["peer_id"] == "2"
    waits = _cancel_all(postgres, pooler)
    assert max(waits) < REACHED_WITHIN_S, waits


def test_without_peering_cancels_are_lost(postgres, pgbouncer_factory):
    # peer_id 0 disables peering: a cancel that lands on the sibling is not forwarded.
    pooler = pgbouncer_factory(
        postgres,
        users={"app_user": PASSWORD},
        pool_size=8,
        processes=2,
        extra={"peer_id": "0"},
    )
    _needs_peering(pooler)
    waits = _cancel_all(postgres, pooler)
    lost = [w for w in waits if w >= REACHED_WITHIN_S]
    # 12 cancels each hashed to one of 2 processes: all on the right one has odds 1 in 4096.
    assert lost, waits
