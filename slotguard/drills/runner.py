"""Run a drill: a write storm against `api`, a fault at a chosen moment, then the reckoning.

The sequence is the same for every scenario: prepare (e.g. warm instances the fault needs), start
the storm, let it run `lead_s`, inject the fault (which may block while it lasts), let the storm
finish, reconcile the acknowledged writes with the table, read the alarm log, judge the targets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from slotguard.drills.faults import StackHandle
from slotguard.drills.reconcile import reconcile
from slotguard.drills.report import Check, DrillResult, recovery, summarise
from slotguard.drills.storm import StormPlan, WriteStorm
from slotguard.local.monitor import CONNECTIONS_QUERY


class DrillError(RuntimeError):
    """A drill could not run as asked; the message says what to change."""


class ConnectionSampler:
    """Client backends on the database every 100 ms (a gap while the database is down)."""

    def __init__(
        self,
        conninfo: str,
        interval_s: float = 0.1,
        query: str = CONNECTIONS_QUERY,
        params: tuple[Any, ...] = (),
    ) -> None:
        self.conninfo = conninfo
        self.interval_s = interval_s
        self.query = query
        self.params = params
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-sampler", daemon=True)

    def start(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    @property
    def peak(self) -> int | None:
        return max((n for _, n in self.samples), default=None)

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while not self._stop.wait(self.interval_s):
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2)
                row = conn.execute(self.query, self.params).fetchone()
                self.samples.append((time.time(), int(row[0]) if row else 0))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


@dataclass
class DrillContext:
    """What a scenario's steps see."""

    handle: StackHandle
    storm: WriteStorm
    small: bool
    fault: dict[str, Any] = field(default_factory=dict)
    down_at: float | None = None  # a restart's moment of outage, when the fault has one

    @property
    def budget(self) -> Any:
        return self.handle.plan.budget

    def function_timeout_s(self, name: str | None = None) -> float:
        """`name`'s timeout; by default the timeout of the function the drill writes through."""
        fn = self.handle.plan.settings.functions.get(name or self.storm.function_name)
        return float(fn.timeout_s) if fn is not None else 15.0


Step = Callable[[DrillContext], None]
Judge = Callable[[DrillContext, DrillResult], list[Check]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    inject: Step
    judge: Judge
    prepare: Step | None = None
    # Runs after the storm, whatever happened: puts the stack back as the drill found it.
    cleanup: Step | None = None
    lead_s: float = 2.0
    duration_s: float = 10.0
    small_duration_s: float = 6.0
    concurrency: int = 12
    small_concurrency: int = 6


def alarms_fired(handle: StackHandle, since: float, until: float) -> list[str]:
    """Alarms that went to ALARM in the window, from the stack's alarm log."""
    path = handle.plan.paths.alarm_log
    if not path.exists():
        return []
    fired = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if since <= float(entry.get("at", 0)) <= until and entry.get("new") == "ALARM":
            fired.append(f"{entry['key']} ({entry.get('value'):g} vs {entry.get('threshold'):g})")
    return fired


def common_checks(result: DrillResult) -> list[Check]:
    """Targets every drill holds: nothing acknowledged lost, no duplicate, nothing hangs."""
    timeout = result.function_timeout_s
    timed_out = result.failed_attempts_by_cause.get("function timeout", 0)
    return [
        Check("0 lost", result.lost == 0, f"{result.lost} of {result.acknowledged} acknowledged"),
        Check("0 duplicates", result.duplicates == 0, f"{result.duplicates} keys"),
        Check(
            "each key stored with its own body",
            result.mismatched == 0,
            f"{result.mismatched} rows carry another request's body",
        ),
        Check(
            "nothing hangs",
            result.longest_attempt_s <= timeout and timed_out == 0,
            f"longest {result.longest_attempt_s:.2f} s, {timed_out} timed out "
            f"(limit {timeout:g} s)",
        ),
        Check(
            "every request answered",
            result.abandoned == 0 and result.rejected == 0,
            f"{result.abandoned} given up, {result.rejected} rejected",
        ),
    ]


def traffic_function(handle: StackHandle, function: str | None = None) -> str:
    """The function the drill writes through, refused before any traffic if the stack lacks it.

    The drills reconcile acknowledged writes row by row, so it must answer a Function URL
    `POST /items` with an `Idempotency-Key` as functions/api.py does.
    """
    name = function or handle.plan.settings.traffic_function
    if name not in handle.record.functions:
        serving = [n for n in handle.record.functions if n in handle.plan.settings.functions]
        raise DrillError(
            f"stack {handle.plan.stack} has no function {name!r} to send the drills' writes "
            f"through (it serves {', '.join(serving)}): the drills need a function answering "
            "POST /items with an Idempotency-Key (functions/api.py); name it with --function, "
            "or restart the stack if its file changed"
        )
    return name


def run_drill(
    handle: StackHandle, scenario: Scenario, *, small: bool = False, function: str | None = None
) -> DrillResult:
    """Run one scenario against the running stack and judge it."""
    function_name = traffic_function(handle, function)
    plan = StormPlan(
        concurrency=scenario.small_concurrency if small else scenario.concurrency,
        duration_s=scenario.small_duration_s if small else scenario.duration_s,
    )
    client = handle.lambda_client(pool_size=plan.concurrency + 8)
    storm = WriteStorm(client, plan, function_name=function_name)
    context = DrillContext(handle, storm, small)
    if scenario.prepare is not None:
        scenario.prepare(context)
    sampler = ConnectionSampler(handle.master_conninfo("postgres")).start()
    storm.start()
    time.sleep(scenario.lead_s)
    fault_at = time.time()
    try:
        scenario.inject(context)
    finally:
        log = storm.wait()
        sampler.stop()
        if scenario.cleanup is not None:
            scenario.cleanup(context)
    ended_at = time.time()
    reconciled = reconcile(handle.master_conninfo(), handle.schema, storm.name_prefix, log)
    time.sleep(1.5)  # the alarm evaluator samples every second
    budget = handle.plan.budget
    result = DrillResult(
        scenario=scenario.name,
        description=scenario.description,
        function_timeout_s=context.function_timeout_s(),
        started_at=storm.started_at,
        fault_at=fault_at,
        down_at=context.down_at,
        ended_at=ended_at,
        recovery=recovery(log.attempts, context.down_at or fault_at),
        peak_db_connections=sampler.peak,
        db_connection_limit=budget.pooler_ceiling + budget.admin_margin,
        alarms=alarms_fired(handle, storm.started_at, time.time()),
        fault=context.fault,
        **summarise(log, reconciled),
    )
    result.checks = common_checks(result) + scenario.judge(context, result)
    return result
