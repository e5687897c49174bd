"""Logins per second per PgBouncer process, counting the pooler's CPU only.

A cold burst makes every function instance log in at once (TLS handshake + SCRAM). What bounds
how fast a pooler task admits it is the CPU its single-threaded processes get, so the figure is
logins per CPU-second of the PgBouncer processes: their utime + stime from /proc/<pid>/stat
before and after N logins through the running stack's pooler. The clients' own CPU (libpq's TLS
and PBKDF2 on this same machine) is not counted, so the figure does not depend on how fast the
load generator is.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra.pooler_logins import MEASURED_LOGINS_PER_CPU_SECOND, admission
from slotguard.local.stack import StackPlan
from slotguard.local.state import StackRecord


@dataclass(frozen=True)
class LoginMeasurement:
    logins: int
    failed: int
    wall_s: float
    pooler_cpu_s: float
    pooler_processes: int

    @property
    def cpu_ms_per_login(self) -> float:
        return 1000.0 * self.pooler_cpu_s / max(self.logins - self.failed, 1)

    @property
    def logins_per_cpu_second(self) -> float:
        return (self.logins - self.failed) / self.pooler_cpu_s if self.pooler_cpu_s else 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pooler_pids(pgbouncer_dir: Path) -> list[int]:
    """The running PgBouncer processes of a local stack, from their pid files."""
    pids = []
    for pid_file in sorted(pgbouncer_dir.glob("pgbouncer-*.pid")):
        pid = int(pid_file.read_text().strip())
        if b"pgbouncer" in Path(f"/proc/{pid}/cmdline").read_bytes():
            pids.append(pid)
    if not pids:
        raise RuntimeError(f"no running PgBouncer under {pgbouncer_dir}; run `slotguard up`")
    return pids


def measure(
    conninfo: str, pids: list[int], *, logins: int = 1000, concurrency: int = 8
) -> LoginMeasurement:
    """`logins` TLS + SCRAM logins (connect, then close) and the pooler CPU they cost."""

    def one(_: int) -> bool:
        try:
            psycopg.connect(conninfo).close()
        except psycopg.Error:
            return False
        return True

    before = sum(process_cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ok = sum(pool.map(one, range(logins)))
    wall = time.monotonic() - started
    after = sum(process_cpu_seconds(pid) for pid in pids)
    return LoginMeasurement(logins, logins - ok, wall, after - before, len(pids))


def bench_logins(plan: StackPlan, record: StackRecord, *, logins: int = 1000) -> dict[str, Any]:
    """Benchmark 8: the measurement, and what it means for the stack's largest cold burst."""
    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=record.ports.pgbouncer,
        user=plan.budget.app_user.name,
        password=record.app_password,
        dbname=record.database,
        sslmode="verify-full",
        sslrootcert=record.ca_file,
        connect_timeout=30,
        application_name="login-bench",
    )
    result = measure(conninfo, pooler_pids(plan.paths.pgbouncer), logins=logins)
    pb = plan.budget.pgbouncer
    stack: dict[str, Any] = {}
    if pb is not None:
        at_measured = admission(
            pb.cold_burst_clients,
            tasks=pb.tasks,
            processes_per_task=pb.processes_per_task,
            task_cpu_units=plan.settings.pooler.pgbouncer.cpu,
            logins_per_cpu_second=result.logins_per_cpu_second,
        )
        stack = {
            "cold_burst_clients": pb.cold_burst_clients,
            "task_cpu_units": plan.settings.pooler.pgbouncer.cpu,
            "logins_per_second_per_process": at_measured.logins_per_second_per_process,
            "cold_burst_admission_s": at_measured.seconds,
        }
    return {
        **asdict(result),
        "cpu_ms_per_login": result.cpu_ms_per_login,
        "logins_per_cpu_second": result.logins_per_cpu_second,
        "documented_logins_per_cpu_second": MEASURED_LOGINS_PER_CPU_SECOND,
        "stack": stack,
    }
