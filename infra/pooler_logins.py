"""How long the stack's largest cold burst takes to log in through PgBouncer (pure).

A cold burst makes every function instance open its connection at once: a TLS handshake and a
SCRAM exchange each, all on PgBouncer's single thread per process. On a 0.25 vCPU Fargate task
that CPU may bound how fast the burst is admitted, and a function that cannot log in within its
connect timeout and retry budget fails although the pool has room.
"""

from __future__ import annotations

from dataclasses import dataclass

# Logins (TLS 1.3 handshake + SCRAM-SHA-256 against an auth-file verifier) one PgBouncer 1.24.1
# process completes per second of its own CPU time. Measured by `make bench` (benchmark 8,
# `python -m slotguard.bench --only 8`): 1,000 logins through the local target's two pooler
# processes, their utime + stime from /proc/<pid>/stat before and after, so only the pooler's CPU
# counts, never the clients'. Two runs on 2026-12-03 on a shared 2-core x86_64 machine: 1.80 and
# 1.66 ms of pooler CPU per login (555 and 602 logins per CPU-second); the lower, rounded down.
MEASURED_LOGINS_PER_CPU_SECOND = 550.0
FARGATE_CPU_UNITS_PER_VCPU = 1024


@dataclass(frozen=True)
class Admission:
    """The burst, the pooler's login rate on its task size, and the time to admit the burst."""

    burst_clients: int
    processes: int
    vcpu_per_process: float
    logins_per_second_per_process: float
    seconds: float

    def arithmetic(self) -> str:
        return (
            f"{self.burst_clients} cold instances / ({self.processes} processes x "
            f"{self.logins_per_second_per_process:.0f} logins/s) = {self.seconds:.1f} s"
        )


def vcpu_per_process(task_cpu_units: int, processes_per_task: int) -> float:
    """The CPU one single-threaded process gets: its share of the task, at most one vCPU.

    Assumption: Fargate's CPU units are a share of vCPUs, and one vCPU does as much login work
    per second as one core of the machine the rate was measured on.
    """
    share = task_cpu_units / FARGATE_CPU_UNITS_PER_VCPU / max(processes_per_task, 1)
    return min(share, 1.0)


def admission(
    burst_clients: int,
    *,
    tasks: int,
    processes_per_task: int,
    task_cpu_units: int,
    logins_per_cpu_second: float = MEASURED_LOGINS_PER_CPU_SECOND,
) -> Admission:
    """Time for `burst_clients` logins spread evenly over every process (NLB, so_reuseport)."""
    processes = tasks * processes_per_task
    share = vcpu_per_process(task_cpu_units, processes_per_task)
    rate = logins_per_cpu_second * share
    seconds = burst_clients / (processes * rate) if processes and rate else float("inf")
    return Admission(burst_clients, processes, share, rate, seconds)
