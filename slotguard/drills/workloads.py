"""The workloads drill: a slow workload saturates its pool share while the fast one is stormed.

Needs a stack with two workloads (`Pulumi.workloads.yaml`): a fast function on the example API
(`functions.api.handler`, the drills' write storm) and a slow one on `functions.reports.handler`
in a workload with a pool share of its own. Slow clients keep twice as many long reports running
as the slow role's pool can serve (every PgBouncer process's `[users]` pool plus the reserve),
from before the storm until it ends. The fast workload must see no failed attempt at all and a
p99 within its own timeout chain (queue wait + its role's statement_timeout + answer reserve);
the slow role must never hold more server connections than its share. Figures: docs/drills.md.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from slotguard.drills.faults import StackHandle
from slotguard.drills.reconcile import reconcile
from slotguard.drills.report import Check, DrillResult, recovery, summarise
from slotguard.drills.runner import ConnectionSampler, DrillError, alarms_fired, common_checks
from slotguard.drills.storm import StormPlan, WriteStorm, invoke

NAME = "workloads"
FAST_HANDLER = "functions.api.handler"
SLOW_HANDLER = "functions.reports.handler"
ROLE_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
LEAD_S = 3.0  # the slow reports hold their pool before the storm starts


@dataclass(frozen=True)
class Pair:
    """The two functions the drill drives and the numbers that judge them."""

    fast: str
    slow: str
    slow_role: str
    slow_capacity: int  # server connections the slow role may hold on this target
    slow_pool: int  # of which its pools proper (the rest is the reserve)
    report_s: float
    fast_chain_s: float


def choose(handle: StackHandle) -> Pair:
    """The fast and the slow function of the stack, or a DrillError saying what is missing."""
    settings, budget = handle.plan.settings, handle.plan.budget
    slow = next(
        (
            n
            for n, f in settings.functions.items()
            if f.handler == SLOW_HANDLER and budget.functions[n].workload in budget.workloads
        ),
        None,
    )
    if slow is None:
        raise DrillError(
            f"stack {handle.plan.stack} has no function on {SLOW_HANDLER} in a workload of its "
            "own (functions.<name>.workload); use a stack like Pulumi.workloads.yaml"
        )
    slow_workload = budget.workloads[budget.functions[slow].workload]
    fast = next(
        (
            n
            for n, f in settings.functions.items()
            if f.handler == FAST_HANDLER and budget.functions[n].workload != slow_workload.name
        ),
        None,
    )
    if fast is None:
        raise DrillError(
            f"stack {handle.plan.stack} has no function on {FAST_HANDLER} outside workload "
            f"{slow_workload.name}: the storm needs one"
        )
    pb = budget.pgbouncer
    if pb is None or slow_workload.max_user_connections is None:
        raise DrillError("the workloads drill needs PgBouncer's per-user pools")
    # Every process of every task runs here on one port: the role's [users] cap in each.
    capacity = pb.processes * slow_workload.max_user_connections
    statement_s = slow_workload.statement_timeout_ms / 1000
    return Pair(
        fast=fast,
        slow=slow,
        slow_role=slow_workload.role,
        slow_capacity=capacity,
        slow_pool=pb.processes * (slow_workload.pool_size or 0),
        # Long, yet well inside the slow role's statement_timeout.
        report_s=max(1.0, min(8.0, statement_s - 2)),
        fast_chain_s=budget.functions[fast].worst_query_s,
    )


@dataclass
class SlowLoad:
    """`clients` threads invoking the slow report back to back until stopped."""

    client: Any
    function: str
    seconds: float
    clients: int
    outcomes: list[tuple[float, int | None, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None

    def start(self) -> SlowLoad:
        self._pool = ThreadPoolExecutor(self.clients, thread_name_prefix="drill-slow")
        for _ in range(self.clients):
            self._pool.submit(self._loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            status, cause = invoke(self.client, self.function, {"seconds": self.seconds})
            with self._lock:
                self.outcomes.append((time.monotonic() - began, status, cause))
            if status != 200:  # a refusal or a throttle: pause rather than spin
                time.sleep(0.2)

    def summary(self) -> dict[str, Any]:
        ok = [s for s, status, _ in self.outcomes if status == 200]
        causes = Counter(c or "other" for _, status, c in self.outcomes if status != 200)
        return {
            "clients": self.clients,
            "report_s": self.seconds,
            "answered": len(ok),
            "longest_answered_s": round(max(ok, default=0.0), 2),
            "refused": dict(causes.most_common()),
        }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_workloads_drill(handle: StackHandle, *, small: bool = False) -> DrillResult:
    """Saturate the slow workload's share, storm the fast one, judge both."""
    pair = choose(handle)
    plan = StormPlan(concurrency=6 if small else 12, duration_s=8.0 if small else 15.0)
    slow_clients = 2 * pair.slow_capacity
    client = handle.lambda_client(pool_size=plan.concurrency + slow_clients + 8)
    storm = WriteStorm(client, plan, function_name=pair.fast)
    slow = SlowLoad(client, pair.slow, pair.report_s, slow_clients)
    all_backends = ConnectionSampler(handle.master_conninfo("postgres")).start()
    slow_backends = ConnectionSampler(
        handle.master_conninfo("postgres"), query=ROLE_BACKENDS, params=(pair.slow_role,)
    ).start()
    slow.start()
    time.sleep(LEAD_S)
    fault_at = time.time()
    storm.start()
    try:
        log = storm.wait()
    finally:
        slow.stop()
        all_backends.stop()
        slow_backends.stop()
    ended_at = time.time()
    reconciled = reconcile(handle.master_conninfo(), handle.schema, storm.name_prefix, log)
    time.sleep(1.5)  # the alarm evaluator samples every second
    budget = handle.plan.budget
    durations = [a.seconds for a in log.attempts]
    p99 = percentile(durations, 0.99)
    slow_figures = slow.summary()
    result = DrillResult(
        scenario=NAME,
        description=(
            f"{slow_clients} {pair.slow} clients keep {pair.report_s:g} s reports running on "
            f"role {pair.slow_role} (its share: {pair.slow_capacity} server connections here) "
            f"while {pair.fast} is stormed"
        ),
        function_timeout_s=float(budget.functions[pair.fast].timeout_s),
        started_at=storm.started_at,
        fault_at=fault_at,
        down_at=None,
        ended_at=ended_at,
        recovery=recovery(log.attempts, fault_at),
        peak_db_connections=all_backends.peak,
        db_connection_limit=budget.pooler_ceiling + budget.admin_margin,
        alarms=alarms_fired(handle, storm.started_at, time.time()),
        fault={
            "fast": pair.fast,
            "slow": pair.slow,
            "fast_p50_s": round(percentile(durations, 0.5), 3),
            "fast_p99_s": round(p99, 3),
            "fast_chain_s": pair.fast_chain_s,
            "slow_role": pair.slow_role,
            "slow_capacity": pair.slow_capacity,
            "slow_peak_backends": slow_backends.peak,
            **{f"slow_{k}": v for k, v in slow_figures.items()},
        },
        **summarise(log, reconciled),
    )
    failed = sum(result.failed_attempts_by_cause.values())
    result.checks = [
        *common_checks(result),
        Check(
            "fast: 0 failed",
            failed == 0,
            f"{failed} failed of {result.attempts} attempts"
            + (f" ({json.dumps(result.failed_attempts_by_cause)})" if failed else ""),
        ),
        Check(
            "fast: p99 within its timeout chain",
            p99 <= pair.fast_chain_s,
            f"p99 {p99:.2f} s <= {pair.fast_chain_s:g} s (queue wait + its role's "
            "statement_timeout + answer reserve)",
        ),
        Check(
            "slow: saturated its share, never more",
            slow_backends.peak is not None
            and pair.slow_pool <= slow_backends.peak <= pair.slow_capacity,
            f"peak {slow_backends.peak} {pair.slow_role} backends: pools {pair.slow_pool}, "
            f"with the reserve {pair.slow_capacity}",
        ),
        Check(
            "slow: long reports answered",
            slow_figures["answered"] > 0 and slow_figures["longest_answered_s"] >= pair.report_s,
            f"{slow_figures['answered']} answered, longest {slow_figures['longest_answered_s']} s",
        ),
    ]
    return result
