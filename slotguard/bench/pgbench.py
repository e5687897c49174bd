"""pgbench `-S` (select-only) through the pooler and straight to the database, same role, same TLS.

The tables are created by the master user in the application schema and granted to `app_user`,
whose role settings put that schema on its search path, so the very same pgbench command runs on
both ports; only the port differs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import psycopg
from psycopg import sql

from slotguard.local.state import StackRecord
from slotguard.local.system import postgres_bindir

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


@dataclass(frozen=True)
class PgbenchRun:
    port: int
    clients: int
    tps: float
    latency_ms: float


def _pgbench() -> str:
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "pgbench").exists():
        raise FileNotFoundError("pgbench not found next to the PostgreSQL server binaries")
    return str(bindir / "pgbench")


def _env(record: StackRecord, password: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGPASSWORD": password,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": record.ca_file,
        **extra,
    }


def prepare(record: StackRecord, schema: str, app_role: str, scale: int = 1) -> None:
    """Create pgbench's tables in the application schema (as the master) and grant reads."""
    env = _env(record, record.master_password, PGOPTIONS=f"-c search_path={schema}")
    common = ["-h", "127.0.0.1", "-p", str(record.ports.postgres), "-U", "postgres"]
    subprocess.run(
        [_pgbench(), "-i", "-q", "-s", str(scale), *common, record.database],
        check=True,
        capture_output=True,
        env=env,
    )
    tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in TABLES)
    with psycopg.connect(_master(record), autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, sql.Identifier(app_role)))


def drop(record: StackRecord, schema: str) -> None:
    tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in TABLES)
    with psycopg.connect(_master(record), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tables))


def _master(record: StackRecord) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=record.ports.postgres,
        user="postgres",
        password=record.master_password,
        dbname=record.database,
        sslmode="verify-full",
        sslrootcert=record.ca_file,
    )


def run(
    record: StackRecord,
    port: int,
    app_role: str,
    *,
    clients: int = 8,
    seconds: int = 10,
    protocol: str = "simple",
) -> PgbenchRun:
    """`pgbench -S -M PROTOCOL -c CLIENTS -j 2 -T SECONDS` as the application role on `port`.

    `protocol` `prepared` prepares each statement once per connection; through PgBouncer that
    needs `max_prepared_statements` (1.21+).
    """
    result = subprocess.run(
        [
            _pgbench(),
            "-S",
            "-n",
            "-M",
            protocol,
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            app_role,
            record.database,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=_env(record, record.app_password),
    )
    if result.returncode != 0:
        raise RuntimeError(f"pgbench on port {port} failed: {result.stderr.strip()[-500:]}")
    latency = re.search(r"latency average = ([\d.]+) ms", result.stdout)
    tps = re.search(r"tps = ([\d.]+)", result.stdout)
    if latency is None or tps is None:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}\n{result.stderr}")
    return PgbenchRun(port, clients, float(tps.group(1)), float(latency.group(1)))
