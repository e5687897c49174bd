"""The drills: what each fault is and which targets it must meet.

Numbers come from the stack's budget (timeouts, pool sizes), so a drill judges the stack it runs
against rather than constants of its own.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from slotguard.drills.calls import Call, burst, probe_event
from slotguard.drills.database_moves import SCENARIOS as DATABASE_MOVES
from slotguard.drills.faults import (
    hold_idle_transactions,
    restart_pgbouncer,
    restart_postgres,
    rotate_app_password,
)
from slotguard.drills.pooler_ops import SCENARIOS as POOLER_OPERATIONS
from slotguard.drills.report import Check, DrillResult
from slotguard.drills.runner import DrillContext, Scenario
from slotguard.local.stack import PROBE

POSTGRES_RECOVERY_S = 10.0
PGBOUNCER_RECOVERY_S = 5.0
# Slack on "ended at the timeout": scheduling on two busy cores, and the statement's own start.
TIMEOUT_SLACK_S = 2.0


def _served_between(result_attempts: Any, start: float, end: float) -> int:
    return sum(1 for a in result_attempts if a.ok and start <= a.end <= end)


def _calls_summary(calls: list[Call]) -> dict[str, Any]:
    causes: dict[str, int] = {}
    for call in calls:
        label = call.cause or f"ok {call.status}"
        causes[label] = causes.get(label, 0) + 1
    return {
        "calls": len(calls),
        "outcomes": causes,
        "longest_s": round(max((c.seconds for c in calls), default=0.0), 3),
        "shortest_s": round(min((c.seconds for c in calls), default=0.0), 3),
    }


def _recovered_within(result: DrillResult, limit_s: float) -> Check:
    first = result.recovery.first_success_s
    return Check(
        f"serves again within {limit_s:g} s",
        first is not None and first <= limit_s,
        "no success after the fault" if first is None else f"first success {first:.2f} s",
    )


# -- 1. PostgreSQL restart ------------------------------------------------------------------------


def _note_restart(ctx: DrillContext, detail: dict[str, float]) -> None:
    # Recovery counts from the moment the part was down, not from the start of its shutdown.
    ctx.down_at = detail.pop("down_at")
    ctx.fault.update({k: round(v, 3) for k, v in detail.items()})


def _postgres_restart(ctx: DrillContext) -> None:
    _note_restart(ctx, restart_postgres(ctx.handle))


def _judge_postgres(ctx: DrillContext, result: DrillResult) -> list[Check]:
    return [_recovered_within(result, POSTGRES_RECOVERY_S)]


# -- 2. PgBouncer restart ------------------------------------------------------------------------


def _pgbouncer_graceful(ctx: DrillContext) -> None:
    _note_restart(ctx, restart_pgbouncer(ctx.handle, kill=False))


def _pgbouncer_kill(ctx: DrillContext) -> None:
    _note_restart(ctx, restart_pgbouncer(ctx.handle, kill=True))


def _judge_pgbouncer(ctx: DrillContext, result: DrillResult) -> list[Check]:
    return [_recovered_within(result, PGBOUNCER_RECOVERY_S)]


# -- 3. slow queries -----------------------------------------------------------------------------


def _slow_count(ctx: DrillContext) -> int:
    pb = ctx.budget.pgbouncer
    # A third of the pool: enough to matter, leaving the rest for the storm.
    return max(2, (pb.tasks * pb.processes * pb.pool_size) // 3) if pb is not None else 4


def _slow_queries(ctx: DrillContext) -> None:
    timeout_ms = int(ctx.budget.app_user.statement_timeout_ms)
    query_ms = timeout_ms + 3000
    client = ctx.handle.lambda_client(pool_size=64)
    calls = burst(client, PROBE, probe_event(query_ms), _slow_count(ctx))
    ctx.fault.update(
        {
            "query_ms": query_ms,
            "statement_timeout_ms": timeout_ms,
            "window": [calls[0].start if calls else 0.0, max((c.end for c in calls), default=0)],
            **_calls_summary(calls),
        }
    )
    ctx.fault["_calls"] = calls


def _judge_slow(ctx: DrillContext, result: DrillResult) -> list[Check]:
    calls: list[Call] = ctx.fault.pop("_calls", [])
    timeout_s = ctx.budget.app_user.statement_timeout_ms / 1000.0
    cancelled = [c for c in calls if c.cause == "statement timeout"]
    on_time = [c for c in cancelled if c.seconds <= timeout_s + TIMEOUT_SLACK_S]
    start, end = ctx.fault["window"]
    served = _served_between(ctx.storm.log.attempts, start, end)
    ctx.fault["storm_served_meanwhile"] = served
    return [
        Check(
            "ended by statement_timeout (57014)",
            len(cancelled) == len(calls) > 0,
            f"{len(cancelled)} of {len(calls)} cancelled",
        ),
        Check(
            f"at the role's timeout ({timeout_s:g} s)",
            len(on_time) == len(calls),
            f"longest {max((c.seconds for c in calls), default=0):.2f} s",
        ),
        Check("the pool kept serving", served > 0, f"{served} writes acknowledged meanwhile"),
    ]


# -- 4. idle in transaction ------------------------------------------------------------------------


def _idle_in_transaction(ctx: DrillContext) -> None:
    timeout_s = ctx.budget.app_user.idle_in_transaction_session_timeout_ms / 1000.0
    held = hold_idle_transactions(ctx.handle, 3, wait_s=timeout_s + 15)
    ctx.fault.update(
        {
            "role_timeout_s": timeout_s,
            "held": [
                {
                    "ended_after_s": None
                    if h.ended_at is None
                    else round(h.ended_at - h.opened_at, 3),
                    "sqlstate": h.sqlstate,
                    "message": h.message,
                }
                for h in held
            ],
            "window": [min((h.opened_at for h in held), default=0.0), time.time()],
        }
    )


def _judge_idle(ctx: DrillContext, result: DrillResult) -> list[Check]:
    timeout_s = ctx.fault["role_timeout_s"]
    ended = [h["ended_after_s"] for h in ctx.fault["held"]]
    on_time = [e for e in ended if e is not None and timeout_s - 0.5 <= e <= timeout_s + 2]
    start, end = ctx.fault["window"]
    served = _served_between(ctx.storm.log.attempts, start, end)
    ctx.fault["storm_served_meanwhile"] = served
    return [
        Check(
            f"ended at the role's timeout ({timeout_s:g} s)",
            len(on_time) == len(ended) > 0,
            "ended after " + ", ".join("never" if e is None else f"{e:.2f} s" for e in ended),
        ),
        Check("others kept being served", served > 0, f"{served} writes acknowledged meanwhile"),
    ]


# -- 5. saturation --------------------------------------------------------------------------------


def _saturation_size(ctx: DrillContext) -> tuple[int, int]:
    """(burst, hold_ms): several times what the pool serves within one queue wait."""
    pb = ctx.budget.pgbouncer
    assert pb is not None
    servers = pb.tasks * pb.processes * (pb.pool_size + pb.reserve_pool)
    hold_ms = 2000
    within_wait = servers * pb.query_wait_timeout_s * 1000 // hold_ms
    return min(int(within_wait * 2), 120 if ctx.small else 200), hold_ms


def _prepare_saturation(ctx: DrillContext) -> None:
    count, _hold = _saturation_size(ctx)
    ctx.handle.runtime_admin().freeze(PROBE, count, probe_event(0))


def _saturation(ctx: DrillContext) -> None:
    count, hold_ms = _saturation_size(ctx)
    client = ctx.handle.lambda_client(pool_size=count)
    calls = burst(client, PROBE, probe_event(hold_ms), count)
    pb = ctx.budget.pgbouncer
    ctx.fault.update(
        {
            "burst": count,
            "hold_ms": hold_ms,
            "query_wait_timeout_s": pb.query_wait_timeout_s if pb else None,
            **_calls_summary(calls),
        }
    )
    ctx.fault["_calls"] = calls


def _judge_saturation(ctx: DrillContext, result: DrillResult) -> list[Check]:
    calls: list[Call] = ctx.fault.pop("_calls", [])
    timeout = ctx.function_timeout_s(PROBE)
    refused = [c for c in calls if c.status is None or c.status >= 500]
    clear = [c for c in refused if c.cause == "pooler queue wait timeout"]
    longest_refusal = max((c.seconds for c in refused), default=0.0)
    ctx.fault["longest_refusal_s"] = round(longest_refusal, 3)
    peak = result.peak_db_connections
    return [
        Check(
            "the excess got the queue-wait error",
            len(refused) > 0 and len(clear) == len(refused),
            f"{len(clear)} of {len(refused)} refusals were the pooler's queue wait",
        ),
        Check(
            "fast: before the function timeout",
            longest_refusal < timeout,
            f"slowest refusal {longest_refusal:.2f} s (timeout {timeout:g} s)",
        ),
        Check(
            "database within ceiling + admin margin",
            peak is not None and peak <= result.db_connection_limit,
            f"peak {peak} / {result.db_connection_limit}",
        ),
    ]


# -- 6. rotation ----------------------------------------------------------------------------------


def _api_log(ctx: DrillContext) -> Path:
    return ctx.handle.plan.paths.logs / "functions" / "api.log"


def _prepare_rotation(ctx: DrillContext) -> None:
    log = _api_log(ctx)
    ctx.fault["_log_offset"] = log.stat().st_size if log.exists() else 0


def _rotation(ctx: DrillContext) -> None:
    ctx.fault.update({k: round(v, 3) for k, v in rotate_app_password(ctx.handle).items()})
    # Server connections recycled right after, as server_idle_timeout or server_lifetime would:
    # every new server login then shows whether PgBouncer holds the new password's keys.
    pooler = ctx.handle.pgbouncer()
    for index in range(pooler.settings.processes):
        with pooler.connect_admin(index) as admin:
            admin.execute(f"RECONNECT {ctx.handle.record.database}")


def _judge_rotation(ctx: DrillContext, result: DrillResult) -> list[Check]:
    # How many instances met 28P01 and fetched the secret again (the helper logs each).
    log = _api_log(ctx)
    offset = int(ctx.fault.pop("_log_offset", 0))
    if log.exists():
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        ctx.fault["credential_refreshes"] = text.count("refreshing credentials")
    # The common checks already require every request answered; here: the new password is live.
    try:
        with psycopg.connect(ctx.handle.app_conninfo()) as conn:
            conn.execute("SELECT 1")
        ok, detail = True, "the secret's new password logs in through the pooler"
    except psycopg.Error as exc:
        ok, detail = False, " ".join(str(exc).split())[:120]
    return [Check("new password in use", ok, detail)]


# -- 7. frozen wave ------------------------------------------------------------------------------


def _frozen_count(ctx: DrillContext) -> int:
    return 20 if ctx.small else 60


def _frozen_wave(ctx: DrillContext) -> None:
    handle = ctx.handle
    frozen = _frozen_count(ctx)
    outcome = handle.runtime_admin().freeze(PROBE, frozen, probe_event(0))
    ctx.fault.update({"frozen": outcome.get("frozen"), "freeze_failed": outcome.get("failed")})
    count = 40 if ctx.small else 100
    base = f"{ctx.storm.run_id}-wave"
    client = handle.lambda_client(pool_size=count)
    with ThreadPoolExecutor(count) as pool:
        finals = list(
            pool.map(lambda i: ctx.storm.request(f"{base}-{i}", client=client), range(count))
        )
    ctx.fault["wave"] = count
    ctx.fault["wave_failed"] = sum(1 for f in finals if not f.ok)
    ctx.fault["wave_attempts_failed"] = sum(
        1 for a in ctx.storm.log.attempts if a.key.startswith(base) and not a.ok
    )
    pb = handle.plan.budget.pgbouncer
    idle_timeout = pb.client_idle_timeout_s if pb else 0
    ctx.fault["client_idle_timeout_s"] = idle_timeout
    if ctx.small:
        return
    ctx.fault["reaped_after_s"] = _wait_reaped(ctx, PROBE, idle_timeout + 20)


def _probe_clients(ctx: DrillContext, application: str) -> int:
    pooler = ctx.handle.pgbouncer()
    total = 0
    for index in range(pooler.settings.processes):
        try:
            clients = pooler.show("CLIENTS", index)
        except psycopg.Error:  # a process restarting: counted on the next poll
            continue
        total += sum(1 for c in clients if c.get("application_name") == application)
    return total


def _wait_reaped(ctx: DrillContext, application: str, limit_s: float) -> float | None:
    started = time.time()
    while time.time() - started < limit_s:
        if _probe_clients(ctx, application) == 0:
            return round(time.time() - started, 1)
        time.sleep(1)
    return None


def _judge_frozen(ctx: DrillContext, result: DrillResult) -> list[Check]:
    checks = [
        Check(
            "the new burst: 0 failed",
            ctx.fault["wave_failed"] == 0,
            f"{ctx.fault['wave_failed']} of {ctx.fault['wave']} failed, "
            f"{ctx.fault['wave_attempts_failed']} attempts retried",
        )
    ]
    if "reaped_after_s" in ctx.fault:
        reaped = ctx.fault["reaped_after_s"]
        limit = ctx.fault["client_idle_timeout_s"]
        checks.append(
            Check(
                "frozen connections reaped by client_idle_timeout",
                reaped is not None,
                "still held"
                if reaped is None
                else f"gone {reaped:g} s after the wave (client_idle_timeout {limit} s)",
            )
        )
    return checks


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "postgres-restart",
            "PostgreSQL fast shutdown, then start",
            _postgres_restart,
            _judge_postgres,
            duration_s=12,
            small_duration_s=8,
        ),
        Scenario(
            "pgbouncer-restart",
            "PgBouncer safe shutdown (SIGINT), then start",
            _pgbouncer_graceful,
            _judge_pgbouncer,
        ),
        Scenario(
            "pgbouncer-kill",
            "PgBouncer SIGKILL, then start",
            _pgbouncer_kill,
            _judge_pgbouncer,
        ),
        Scenario(
            "slow-queries",
            "queries longer than statement_timeout mixed into the storm",
            _slow_queries,
            _judge_slow,
            lead_s=1.0,
            duration_s=9,
            small_duration_s=9,
        ),
        Scenario(
            "idle-in-transaction",
            "clients idle inside a transaction through the pooler",
            _idle_in_transaction,
            _judge_idle,
            lead_s=1.0,
            duration_s=12,
            small_duration_s=12,
        ),
        Scenario(
            "saturation",
            "a burst far larger than the pool serves within the queue wait",
            _saturation,
            _judge_saturation,
            prepare=_prepare_saturation,
            lead_s=1.0,
            duration_s=12,
            small_duration_s=10,
        ),
        Scenario(
            "rotation",
            "app_user's password rotated while the storm runs",
            _rotation,
            _judge_rotation,
            prepare=_prepare_rotation,
            lead_s=3.0,
        ),
        Scenario(
            "frozen-wave",
            "instances frozen holding connections, then a new burst",
            _frozen_wave,
            _judge_frozen,
            lead_s=1.0,
            duration_s=6,
            small_duration_s=4,
        ),
    )
}
# Pooler operations (slotguard/drills/pooler_ops.py): rolling restart, scale out/in, cancels.
SCENARIOS.update(POOLER_OPERATIONS)
# The database moving under the pooler (slotguard/drills/database_moves.py): failover, upgrade.
SCENARIOS.update(DATABASE_MOVES)
