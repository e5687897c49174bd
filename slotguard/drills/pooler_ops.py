"""Pooler operations rehearsed on the local target: rolling restart, scale out and in, cancels.

The local target runs every task's PgBouncer processes on one port with `so_reuseport`. A drill
adds processes in spare slots beside them (the deploy's surge, a scale-out) and stops processes
the way the ECS task's entrypoint does (SIGINT: PgBouncer's safe shutdown, immediate after the
drain timeout), while the write storm runs. The server connections of old and new processes
together are sampled on the database and held to the budget's planned peak.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from slotguard.drills.calls import burst, probe_event
from slotguard.drills.faults import StackHandle
from slotguard.drills.report import Check, DrillResult
from slotguard.drills.runner import ConnectionSampler, DrillContext, DrillError, Scenario
from slotguard.local.pgbouncer import LocalPgBouncer, with_processes
from slotguard.local.stack import PROBE
from slotguard.local.state import STACK_MARKER_ENV

ROLE_CONNECTIONS_QUERY = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = %s"
)
# How long a new process runs before old ones stop: the NLB health check's stand-in.
SETTLE_S = 0.5
# A cancelled statement ends within this of the cancel request (a lost one runs to the timeout).
CANCEL_WITHIN_S = 2.0
CANCEL_SLEEP_S = 30


@dataclass
class Step:
    """One process started or stopped, and how long it took."""

    action: str
    slot: int
    at: float
    seconds: float
    clean: bool = True


@contextlib.contextmanager
def _stack_marker(handle: StackHandle) -> Iterator[None]:
    """Processes started here carry the stack's marker, so `slotguard down` finds them."""
    before = os.environ.get(STACK_MARKER_ENV)
    os.environ[STACK_MARKER_ENV] = str(handle.plan.paths.root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STACK_MARKER_ENV, None)
        else:
            os.environ[STACK_MARKER_ENV] = before


def widened(handle: StackHandle, extra: int) -> tuple[LocalPgBouncer, int]:
    """The stack's pooler with `extra` spare slots, files written, running processes reloaded.

    Every process's `[peers]` then lists the spare slots too, so cancels reach them.
    """
    pooler = handle.pgbouncer()
    running = pooler.settings.processes
    if running < 2:
        raise DrillError(
            f"the stack runs {running} PgBouncer process; a process can share its port only "
            "with so_reuseport, rendered from 2 processes: set pooler.pgbouncer.tasks or "
            "processes_per_task so tasks x processes_per_task >= 2"
        )
    wide = LocalPgBouncer(
        pooler.root,
        with_processes(pooler.settings, pooler.root, running + extra),
        pooler.verifiers,
        pooler.user,
        pooler.tls,
        admin_password=pooler.admin_password,
    )
    wide.write_files()
    wide.reload_running()
    return wide, running


def restore_files(handle: StackHandle) -> None:
    """The stack's own files again (its processes only in `[peers]`), reloaded."""
    pooler = handle.pgbouncer()
    pooler.write_files()
    pooler.reload_running()


def _start(handle: StackHandle, pooler: LocalPgBouncer, slot: int, steps: list[Step]) -> None:
    started = time.monotonic()
    with _stack_marker(handle):
        pooler.start_process(slot)
    steps.append(Step("start", slot, time.time(), time.monotonic() - started))


def _stop(pooler: LocalPgBouncer, slot: int, drain_s: float, steps: list[Step]) -> None:
    at = time.time()
    seconds, clean = pooler.stop_process(slot, drain_timeout_s=drain_s)
    steps.append(Step("stop", slot, at, seconds, clean))


def _drain_s(ctx: DrillContext) -> float:
    pb = ctx.budget.pgbouncer
    assert pb is not None
    return float(pb.deploy.drain_timeout_s)


def _role_sampler(ctx: DrillContext) -> ConnectionSampler:
    return ConnectionSampler(
        ctx.handle.master_conninfo("postgres"),
        query=ROLE_CONNECTIONS_QUERY,
        params=(ctx.handle.app_user,),
    ).start()


def _record_steps(ctx: DrillContext, steps: list[Step], sampler: ConnectionSampler) -> None:
    sampler.stop()
    ctx.fault["server_connections_peak"] = sampler.peak
    ctx.fault["steps"] = [
        {"action": s.action, "slot": s.slot + 1, "seconds": round(s.seconds, 3), "clean": s.clean}
        for s in steps
    ]
    stops = [s for s in steps if s.action == "stop"]
    ctx.fault["longest_stop_s"] = round(max((s.seconds for s in stops), default=0.0), 3)
    ctx.fault["unclean_stops"] = sum(1 for s in stops if not s.clean)


def _clients_on(pooler: LocalPgBouncer, slot: int) -> int:
    """Application clients (not console users) of the process in `slot`."""
    try:
        rows = pooler.show("CLIENTS", slot)
    except psycopg.Error:
        return 0
    return sum(1 for r in rows if r.get("database") != "pgbouncer")


# -- rolling restart -----------------------------------------------------------------------------


def _rolling_restart(ctx: DrillContext) -> None:
    """Replace every process, a task's worth at a time, new ones started before old ones stop.

    Slots stay the stack's own: a batch's replacements start in the spare slots, the old
    processes stop, new processes start in their slots, then the spares stop. At no moment do
    more than `tasks + surge` tasks' processes run, which is what the pools were sized for.
    """
    pb = ctx.budget.pgbouncer
    assert pb is not None
    batch = pb.processes_per_task
    surge = pb.deploy.surge_tasks * pb.processes_per_task
    pooler, running = widened(ctx.handle, surge)
    sampler = _role_sampler(ctx)
    steps: list[Step] = []
    drain = _drain_s(ctx)
    for first in range(0, running, batch):
        olds = list(range(first, min(first + batch, running)))
        spares = list(range(running, running + min(surge, len(olds))))
        for slot in spares:
            _start(ctx.handle, pooler, slot, steps)
        time.sleep(SETTLE_S if spares else 0)
        for slot in olds:
            _stop(pooler, slot, drain, steps)
        for slot in olds:
            _start(ctx.handle, pooler, slot, steps)
        time.sleep(SETTLE_S)
        for slot in spares:
            _stop(pooler, slot, drain, steps)
    _record_steps(ctx, steps, sampler)
    ctx.fault.update({"processes": running, "surge_processes": surge, "drain_timeout_s": drain})


def _judge_operation(ctx: DrillContext, result: DrillResult) -> list[Check]:
    planned = ctx.budget.pooler_planned_max
    peak = ctx.fault.get("server_connections_peak")
    failed = sum(result.failed_attempts_by_cause.values())
    return [
        Check(
            "no failed request",
            failed == 0,
            f"{failed} failed attempts ({result.failed_attempts_by_cause or 'none'})",
        ),
        Check(
            "server connections within the planned peak",
            peak is not None and peak <= planned <= ctx.budget.pooler_ceiling,
            f"app_user peak {peak} / planned {planned} (ceiling {ctx.budget.pooler_ceiling})",
        ),
        Check(
            "every stop a safe shutdown within the drain timeout",
            ctx.fault.get("unclean_stops", 0) == 0,
            f"longest {ctx.fault.get('longest_stop_s', 0):g} s of {_drain_s(ctx):g} s",
        ),
    ]


# -- scale out / scale in ------------------------------------------------------------------------


# Rounds of new instances the scaling drills may need before so_reuseport hands the process in
# question a client.
SCALE_ROUNDS = 5


def _burst_size(ctx: DrillContext) -> int:
    return 16 if ctx.small else 32


def _new_clients_until_on(
    ctx: DrillContext, pooler: LocalPgBouncer, slot: int
) -> tuple[int, int, int]:
    """Cold-start instances until the process in `slot` holds clients: (failed, rounds, clients).

    Only a new connection can land on a given process, and warm instances keep the ones they
    have: a burst of invocations reuses whatever idle instances earlier drills left, so how many
    connections it opens depends on what ran before. Each round therefore cold-starts exactly
    `_burst_size` new probe instances (the runtime's `fresh` freeze), each opening one connection
    that so_reuseport hashes over every process, and leaves them frozen holding it. One round
    can still miss the process by chance ((2/3)^16 with three processes), so go again, a few
    times at most.
    """
    admin = ctx.handle.runtime_admin()
    failed, rounds, clients = 0, 0, 0
    while rounds < SCALE_ROUNDS and clients == 0:
        outcome = admin.freeze(PROBE, _burst_size(ctx), probe_event(0), fresh=True)
        failed += int(outcome.get("failed") or 0)
        rounds += 1
        clients = _clients_on(pooler, slot)
    ctx.fault["new_instances"] = rounds * _burst_size(ctx)
    return failed, rounds, clients


def _scale_out(ctx: DrillContext) -> None:
    pooler, running = widened(ctx.handle, 1)
    sampler = _role_sampler(ctx)
    steps: list[Step] = []
    _start(ctx.handle, pooler, running, steps)
    failed, bursts, clients = _new_clients_until_on(ctx, pooler, running)
    ctx.fault["new_process_clients"] = clients
    ctx.fault["burst"] = _burst_size(ctx)
    ctx.fault["bursts"] = bursts
    ctx.fault["burst_failed"] = failed
    time.sleep(1.0)
    _record_steps(ctx, steps, sampler)
    ctx.fault["processes"] = f"{running} -> {running + 1}"


def _stop_spare_process(ctx: DrillContext) -> None:
    """Cleanup of both scaling drills: the spare slot's process goes, the stack's files return."""
    pooler, running = widened(ctx.handle, 1)
    pooler.stop_process(running, drain_timeout_s=_drain_s(ctx))
    restore_files(ctx.handle)


def _judge_scale_out(ctx: DrillContext, result: DrillResult) -> list[Check]:
    clients = ctx.fault.get("new_process_clients", 0)
    return [
        *_judge_operation(ctx, result),
        Check(
            "the new process takes new clients",
            clients > 0,
            f"{clients} clients on the added process after {ctx.fault.get('bursts', 1)} "
            f"round(s) of {ctx.fault.get('burst')} new instances",
        ),
    ]


def _prepare_scale_in(ctx: DrillContext) -> None:
    pooler, running = widened(ctx.handle, 1)
    with _stack_marker(ctx.handle):
        pooler.start_process(running)
    ctx.fault["_slot"] = running


def _scale_in(ctx: DrillContext) -> None:
    slot = int(ctx.fault.pop("_slot"))
    pooler, running = widened(ctx.handle, 1)
    sampler = _role_sampler(ctx)
    # New instances first, so the process that goes holds clients when it is stopped.
    failed, rounds, clients = _new_clients_until_on(ctx, pooler, slot)
    ctx.fault["burst_failed"] = failed
    ctx.fault["clients_when_stopped"] = clients
    steps: list[Step] = []
    _stop(pooler, slot, _drain_s(ctx), steps)
    # Thaw them: an instance whose connection the stopped process closed finds it closed and
    # reconnects to one of the processes left.
    size = _burst_size(ctx)
    client = ctx.handle.lambda_client(pool_size=size)
    calls = [call for _ in range(rounds) for call in burst(client, PROBE, probe_event(0), size)]
    ctx.fault["thawed"] = len(calls)
    ctx.fault["thawed_failed"] = sum(1 for c in calls if c.status != 200)
    time.sleep(1.0)
    _record_steps(ctx, steps, sampler)
    restore_files(ctx.handle)
    ctx.fault["processes"] = f"{running + 1} -> {running}"


def _judge_scale_in(ctx: DrillContext, result: DrillResult) -> list[Check]:
    clients = ctx.fault.get("clients_when_stopped", 0)
    return [
        *_judge_operation(ctx, result),
        Check(
            "the removed process held clients",
            clients > 0,
            f"{clients} clients on it when it was stopped",
        ),
        Check(
            "its clients reconnect elsewhere",
            ctx.fault.get("thawed_failed") == 0,
            f"{ctx.fault.get('thawed_failed')} of {ctx.fault.get('thawed')} thawed instances "
            "failed to answer",
        ),
    ]


# -- cancel requests -----------------------------------------------------------------------------


@dataclass
class Cancelled:
    """One long statement, its process, and how its cancel went."""

    name: str
    slot: int
    cancelled_at: float = 0.0
    ended_at: float | None = None
    sqlstate: str | None = None
    message: str = ""


def _spread_connections(
    handle: StackHandle, pooler: LocalPgBouncer, per_process: int
) -> list[tuple[psycopg.Connection[Any], Cancelled]]:
    """Open clients over TCP until every process holds `per_process` of them (kept)."""
    processes = pooler.settings.processes
    kept: list[tuple[psycopg.Connection[Any], Cancelled]] = []
    spare: list[psycopg.Connection[Any]] = []
    counts = dict.fromkeys(range(processes), 0)
    for attempt in range(per_process * processes * 8):
        if all(n >= per_process for n in counts.values()):
            break
        name = f"slotguard-cancel-{attempt}"
        conn = psycopg.connect(
            psycopg.conninfo.make_conninfo(handle.app_conninfo(), application_name=name),
            autocommit=True,
        )
        conn.execute("SELECT 1")
        slot = next(
            (
                i
                for i in range(processes)
                if any(r.get("application_name") == name for r in pooler.show("CLIENTS", i))
            ),
            -1,
        )
        if slot >= 0 and counts[slot] < per_process:
            counts[slot] += 1
            kept.append((conn, Cancelled(name, slot)))
        else:
            spare.append(conn)
    for conn in spare:
        conn.close()
    return kept


def _cancel(ctx: DrillContext) -> None:
    pooler = ctx.handle.pgbouncer()
    kept = _spread_connections(ctx.handle, pooler, per_process=2)
    ctx.fault["processes"] = pooler.settings.processes
    ctx.fault["peering"] = pooler.settings.processes > 1 and pooler.settings.version >= (1, 19)

    def run(conn: psycopg.Connection[Any], record: Cancelled) -> None:
        try:
            conn.execute(f"SELECT pg_sleep({CANCEL_SLEEP_S})")
        except psycopg.Error as exc:
            record.sqlstate = exc.sqlstate
            record.message = " ".join(str(exc).split())[:120]
        record.ended_at = time.time()

    threads = [threading.Thread(target=run, args=pair, daemon=True) for pair in kept]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for conn, record in kept:
        record.cancelled_at = time.time()
        conn.cancel_safe(timeout=5)  # a new TCP connection: so_reuseport picks any process
    for thread in threads:
        thread.join(CANCEL_SLEEP_S + 5)
    for conn, _ in kept:
        conn.close()
    ctx.fault["statements"] = [
        {
            "process": r.slot + 1,
            "sqlstate": r.sqlstate,
            "ended_after_cancel_s": None
            if r.ended_at is None
            else round(r.ended_at - r.cancelled_at, 3),
        }
        for _, r in kept
    ]


def _judge_cancel(ctx: DrillContext, result: DrillResult) -> list[Check]:
    statements = ctx.fault.get("statements", [])
    processes = int(ctx.fault.get("processes", 0))
    covered = {s["process"] for s in statements}
    reached = [
        s
        for s in statements
        if s["sqlstate"] == "57014"
        and s["ended_after_cancel_s"] is not None
        and s["ended_after_cancel_s"] <= CANCEL_WITHIN_S
    ]
    slowest = max((s["ended_after_cancel_s"] or CANCEL_SLEEP_S for s in statements), default=0.0)
    return [
        Check(
            "clients on every process",
            len(covered) == processes > 0,
            f"{len(statements)} statements on processes {sorted(covered)} of {processes}",
        ),
        Check(
            "every cancel reached its statement (57014)",
            len(reached) == len(statements) > 0,
            f"{len(reached)} of {len(statements)} within {CANCEL_WITHIN_S:g} s, slowest "
            f"{slowest:g} s",
        ),
    ]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "pooler-rolling-restart",
            "every PgBouncer process replaced, new ones started before old ones safely stop",
            _rolling_restart,
            _judge_operation,
            cleanup=lambda ctx: restore_files(ctx.handle),
            lead_s=1.5,
            duration_s=12,
            small_duration_s=10,
        ),
        Scenario(
            "pooler-scale-out",
            "a PgBouncer process added on the shared port under load",
            _scale_out,
            _judge_scale_out,
            cleanup=_stop_spare_process,
            lead_s=1.5,
            duration_s=8,
            small_duration_s=6,
        ),
        Scenario(
            "pooler-scale-in",
            "a PgBouncer process holding clients safely stopped under load",
            _scale_in,
            _judge_scale_in,
            prepare=_prepare_scale_in,
            cleanup=_stop_spare_process,
            lead_s=1.5,
            duration_s=8,
            small_duration_s=6,
        ),
        Scenario(
            "cancel",
            "cancel requests from clients on every process, through the shared port",
            _cancel,
            _judge_cancel,
            lead_s=1.0,
            duration_s=6,
            small_duration_s=5,
        ),
    )
}
