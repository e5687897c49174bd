"""Many simulated function instances as asyncio clients: one client connection each, the helper's
retry policy, spread over a few processes.

The local runtime runs each instance as a thread in one process per function, which suits a
thousand instances, not ten thousand. What matters at that scale is the pooler: does every
client get through, and do the database's connections stay within the ceiling? So each simulated
instance is a psycopg `AsyncConnection` doing what the helper does on an invocation: connect and
BEGIN as one step, retried with the helper's own classification (`functions.errors`) and backoff
(`functions.db`'s full-jitter exponential, tenacity) until its retry budget is spent, then its
query, then COMMIT.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_random_exponential

from functions.db import BACKOFF_BASE_S, BACKOFF_MAX_S
from functions.errors import classify, is_retryable_at_connect


@dataclass(frozen=True)
class InstanceSpec:
    """What each simulated instance does."""

    conninfo: str
    retry_budget_s: float
    query_ms: float = 0.0
    # Keep the connection (a warm instance) and run invocations until this many seconds have
    # passed since the start; 0: one invocation, then the instance ends and closes it.
    sustain_s: float = 0.0
    # Stay connected, idle, for this long after the last invocation (a frozen instance).
    hold_s: float = 0.0
    # Connect attempts in flight per client process (see `_begin`).
    connect_gate: int = 16
    # Count transactions only after this many seconds (a sustained run's steady state).
    measure_after_s: float = 0.0


@dataclass
class ProcessResult:
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    transactions: int = 0
    measured_transactions: int = 0
    duration_s: float = 0.0


def raise_nofile(needed: int) -> int:
    """Raise the soft file-descriptor limit towards `needed` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(needed, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _begin(
    spec: InstanceSpec, counter: list[int], gate: asyncio.Semaphore
) -> psycopg.AsyncConnection[Any]:
    """Connect and BEGIN as one retried step, exactly where and how the helper retries.

    A connect costs the client ~6 ms of CPU (TLS with certificate verification, SCRAM's 4,096
    PBKDF2 rounds), which libpq spends on the event loop. On AWS every instance brings its own
    CPU; here thousands share two cores, and with every attempt in flight at once each would
    progress so slowly that all of them hit `connect_timeout` together, forever. So attempts
    pass a gate of `connect_gate` per process, and an instance's retry budget starts when it
    first gets through: the wait for the gate stands for CPU the simulation lacks, not for
    anything the pooler did.
    """
    deadline: float | None = None

    def stop(state: RetryCallState) -> bool:
        assert deadline is not None
        return time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

    def before_sleep(_state: RetryCallState) -> None:
        counter[0] += 1

    async for attempt in AsyncRetrying(
        stop=stop,
        wait=wait_random_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_MAX_S),
        retry=retry_if_exception(is_retryable_at_connect),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            async with gate:
                if deadline is None:
                    deadline = time.monotonic() + spec.retry_budget_s
                conn = await psycopg.AsyncConnection.connect(
                    spec.conninfo, autocommit=True, prepare_threshold=None
                )
                try:
                    await conn.execute("BEGIN")
                except psycopg.Error:
                    await conn.close()
                    raise
            return conn
    raise AssertionError("unreachable: tenacity re-raises the last error")


async def _instance(
    spec: InstanceSpec, result: ProcessResult, origin: float, gate: asyncio.Semaphore
) -> None:
    counter = [0]
    started = time.monotonic()
    try:
        conn = await _begin(spec, counter, gate)
    except psycopg.Error as exc:
        cause = str(classify(exc))
        result.failed[cause] = result.failed.get(cause, 0) + 1
        result.retries += counter[0]
        return
    result.retries += counter[0]
    try:
        while True:
            await conn.execute("SELECT pg_sleep(%s)", (spec.query_ms / 1000.0,))
            await conn.execute("COMMIT")
            result.transactions += 1
            elapsed = time.monotonic() - origin
            if elapsed >= spec.measure_after_s:
                result.measured_transactions += 1
            if elapsed >= spec.sustain_s:
                break
            await conn.execute("BEGIN")
        result.ok += 1
        result.latencies_ms.append((time.monotonic() - started) * 1000)
        if spec.hold_s:
            await asyncio.sleep(spec.hold_s)
    except psycopg.Error as exc:
        cause = str(classify(exc))
        result.failed[cause] = result.failed.get(cause, 0) + 1
    finally:
        await conn.close()


async def _run_many(spec: InstanceSpec, count: int, start_at: float) -> ProcessResult:
    result = ProcessResult()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    origin = time.monotonic()
    gate = asyncio.Semaphore(spec.connect_gate)
    await asyncio.gather(*(_instance(spec, result, origin, gate) for _ in range(count)))
    result.duration_s = time.monotonic() - origin
    return result


def _process_main(spec: InstanceSpec, count: int, start_at: float) -> ProcessResult:
    raise_nofile(count + 256)
    return asyncio.run(_run_many(spec, count, start_at))


@dataclass
class SimulationResult:
    instances: int
    ok: int
    failed: dict[str, int]
    retries: int
    transactions: int
    measured_transactions: int
    duration_s: float
    # From the common start to the last instance's COMMIT (frozen holds excluded).
    invocations_done_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


def simulate(spec: InstanceSpec, instances: int, processes: int = 2) -> SimulationResult:
    """Run `instances` simulated instances over `processes` processes, all started together."""
    per = [
        instances // processes + (1 if i < instances % processes else 0) for i in range(processes)
    ]
    start_at = time.time() + 1.0  # every process is ready before the first instance starts
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with context.Pool(processes) as pool:
        parts = pool.starmap(_process_main, [(spec, n, start_at) for n in per])
    failed: dict[str, int] = {}
    for part in parts:
        for cause, n in part.failed.items():
            failed[cause] = failed.get(cause, 0) + n
    latencies = sorted(value for part in parts for value in part.latencies_ms)

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        if len(latencies) == 1:
            return latencies[0]
        return statistics.quantiles(latencies, n=100, method="inclusive")[int(q) - 1]

    return SimulationResult(
        instances=instances,
        ok=sum(p.ok for p in parts),
        failed=failed,
        retries=sum(p.retries for p in parts),
        transactions=sum(p.transactions for p in parts),
        measured_transactions=sum(p.measured_transactions for p in parts),
        duration_s=max((p.duration_s for p in parts), default=time.monotonic() - started),
        invocations_done_s=(latencies[-1] / 1000.0) if latencies else 0.0,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
    )
