"""Live metrics of a running local stack, for the alarm evaluator, the status command and the storm.

The alarm rules name logical metrics (`infra/alarm_rules.py`); here each is read where the local
target keeps it: database connections from `pg_stat_activity` (client backends, as RDS counts
them), the pooler's waiting clients, oldest wait and client connections from every PgBouncer
process's admin console, and function throttles and errors from the runtime's counters (the
change since the previous sample, as CloudWatch sums them per period).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from pgbouncer.exporter import ADMIN_DATABASE, combine, poll_process, show_rows
from slotguard.local.runtime import RuntimeAdminClient

# Client backends, as RDS's DatabaseConnections metric counts them.
CONNECTIONS_QUERY = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"


class DatabaseObserver:
    """Client backends on the database, over one kept admin connection."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The kept connection (opened now if there is none): open it before a storm, while the
        database has free slots, and it serves through the storm however full the server gets."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._conn

    def connections(self) -> int:
        conn = self.connection()
        try:
            row = conn.execute(CONNECTIONS_QUERY).fetchone()
        except psycopg.OperationalError:
            conn.close()
            raise
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PoolerObserver:
    """Waiting clients summed over the processes, over kept console connections (fast: 10 Hz)."""

    def __init__(self, conninfos: list[str]) -> None:
        self.conninfos = conninfos
        self._conns: dict[str, psycopg.Connection[tuple[Any, ...]]] = {}

    def _conn(self, conninfo: str) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._conns.get(conninfo)
        if conn is None or conn.closed:
            conn = psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor)
            self._conns[conninfo] = conn
        return conn

    def waiting(self) -> int:
        total = 0
        for conninfo in self.conninfos:
            conn = self._conn(conninfo)
            try:
                with conn.cursor() as cur:
                    total += sum(
                        int(pool["cl_waiting"])
                        for pool in show_rows(cur, "SHOW POOLS")
                        if pool["database"] != ADMIN_DATABASE
                    )
            except psycopg.OperationalError:
                conn.close()
                raise
        return total

    def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(psycopg.Error):
                conn.close()


class StackSampler:
    """Every alarm metric of the local stack in one sample (a failing part is left out)."""

    def __init__(
        self, db: DatabaseObserver, admin_conninfos: list[str], runtime: RuntimeAdminClient
    ) -> None:
        self.db = db
        self.admin_conninfos = admin_conninfos
        self.runtime = runtime
        self._last_counts: dict[str, float] | None = None

    def __call__(self) -> dict[str, float]:
        sample: dict[str, float] = {"db_connections": float(self.db.connections())}
        with contextlib.suppress(psycopg.Error):
            pooled = combine([poll_process(c) for c in self.admin_conninfos])
            sample["pooler_waiting_clients"] = float(pooled.client_waiting)
            sample["pooler_oldest_wait_s"] = float(pooled.max_wait_s)
            sample["pooler_client_connections"] = float(pooled.client_connections)
            # Each workload's own pool, keyed as its rules' `sample_key` (none without workloads).
            for role, (waiting, oldest) in pooled.users.items():
                sample[f"pooler_waiting_clients:{role}"] = float(waiting)
                sample[f"pooler_oldest_wait_s:{role}"] = float(oldest)
        with contextlib.suppress(Exception):
            sample.update(self._function_counts())
        return sample

    def _function_counts(self) -> dict[str, float]:
        stats = self.runtime.stats()
        counts = {
            "function_throttles": float(sum(s.get("throttles", 0) for s in stats.values())),
            "function_errors": float(
                sum(s.get("errors", 0) + s.get("timeouts", 0) for s in stats.values())
            ),
        }
        previous, self._last_counts = self._last_counts, counts
        if previous is None:
            return {}
        return {key: max(value - previous[key], 0.0) for key, value in counts.items()}
