"""Drills that move the database under the pooler: a failover and a major-version switchover.

- `failover`: the local "cluster" is the stack's server and a synchronous streaming replica
  started for the drill (`slotguard.local.replica`), the local stand-in for an Aurora reader or a
  Multi-AZ standby; the writer crashes (immediate shutdown: its sessions end), the replica is
  promoted and the pooler is re-pointed at it, as PgBouncer reaches a new writer once DNS moves.
- `major-upgrade`: an RDS blue/green switchover to the next PostgreSQL major
  (`slotguard.local.bluegreen`): green is a logical-replication copy kept in sync; blue becomes
  read-only and its sessions are terminated (PgBouncer's server connections get 57P01), green
  catches up, and the pooler is re-pointed at green.

Both run under the write storm; each drill then puts the stack back as it found it (the stack's
own server, on its own port, holding every row) while nothing writes, so reconciliation and later
drills see the stack's server. The figure both report is the write outage: the longest interval
without an acknowledged write after the fault began.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import psycopg
from psycopg import sql

from slotguard.drills.faults import StackHandle
from slotguard.drills.pooler_ops import _stack_marker
from slotguard.drills.report import Check, DrillResult
from slotguard.drills.runner import DrillContext, Scenario
from slotguard.drills.storm import Attempt
from slotguard.local import bluegreen, replica
from slotguard.local.pgbouncer import LocalPgBouncer
from slotguard.local.ports import free_port
from slotguard.local.postgres import LocalPostgres

# Writes must resume within this after the fault (the function's retry budget covers less; the
# storm's clients retry with the same key, so a longer outage costs time, never data).
FAILOVER_OUTAGE_LIMIT_S = 10.0
SWITCHOVER_OUTAGE_LIMIT_S = 10.0
REPLICA_DIR = "postgres-replica"
GREEN_DIR = "postgres-green"


def repoint_pooler(handle: StackHandle, port: int) -> float:
    """Point every PgBouncer process of the stack at the database on `port`; the seconds taken.

    The ini files are rewritten with the new server port, then each process is told `RELOAD`
    (synchronous on its admin console, unlike SIGHUP) and `RECONNECT` (server connections to the
    old server close as soon as they are released). Clients stay connected to the pooler.
    """
    pooler = handle.pgbouncer()
    settings = pooler.settings
    moved = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, port=port)
    )
    repointed = LocalPgBouncer(
        pooler.root,
        moved,
        pooler.verifiers,
        pooler.user,
        pooler.tls,
        admin_password=pooler.admin_password,
    )
    started = time.monotonic()
    repointed.write_files()
    for index in range(moved.processes):
        with repointed.connect_admin(index) as admin:
            admin.execute("RELOAD")
            admin.execute(f"RECONNECT {settings.database.client_name}")
    return time.monotonic() - started


def write_outage_s(attempts: list[Attempt], since: float, until: float) -> float:
    """The longest interval without an acknowledged write that ends after `since`."""
    ends = sorted(a.end for a in attempts if a.ok)
    before = [e for e in ends if e < since]
    after = [e for e in ends if e >= since]
    points = ([before[-1]] if before else [since]) + after
    gaps = [b - a for a, b in itertools.pairwise(points)]
    if not after:
        gaps.append(until - points[0])
    return max(gaps, default=0.0)


def _outage_check(ctx: DrillContext, result: DrillResult, limit_s: float) -> Check:
    outage = write_outage_s(ctx.storm.log.attempts, result.fault_at, result.ended_at)
    ctx.fault["write_outage_s"] = round(outage, 3)
    failed = sum(1 for a in ctx.storm.log.attempts if not a.ok)
    ctx.fault["failed_attempts"] = failed
    return Check(
        f"writes resume within {limit_s:g} s",
        outage <= limit_s,
        f"longest write outage {outage:.2f} s, {failed} attempts failed and were retried",
    )


def _server_version(server: LocalPostgres) -> int:
    with server.connect_admin() as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) if row else 0


# -- failover ------------------------------------------------------------------------------------


def _prepare_failover(ctx: DrillContext) -> None:
    handle = ctx.handle
    primary = handle.postgres()
    root = handle.plan.paths.root / REPLICA_DIR
    with _stack_marker(handle):
        standby = replica.start_streaming_replica(primary, root, free_port())
    try:
        # Synchronous, as Multi-AZ storage or Aurora's quorum: an acknowledged commit is on
        # both. Set after the base backup, so the replica's copy of the configuration lacks it.
        with primary.connect_admin() as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                    sql.Literal(sql.Identifier(root.name).as_string(conn))
                )
            )
            conn.execute("SELECT pg_reload_conf()")
    except BaseException:
        replica.remove(standby)
        raise
    ctx.fault["_replica"] = standby
    ctx.fault["replica_port"] = standby.settings.port


def _failover(ctx: DrillContext) -> None:
    handle = ctx.handle
    standby: LocalPostgres = ctx.fault["_replica"]
    primary = handle.postgres()
    started = time.monotonic()
    primary.stop("immediate")  # the writer fails: its sessions end, nothing is flushed
    ctx.down_at = time.time()
    stopped = time.monotonic()
    with _stack_marker(handle):
        promote_s = replica.promote(standby)
    repoint_s = repoint_pooler(handle, standby.settings.port)
    ctx.fault.update(
        {
            "writer_down_s": round(stopped - started, 3),
            "promote_s": round(promote_s, 3),
            "repoint_s": round(repoint_s, 3),
            "failover_s": round(time.monotonic() - started, 3),
            "promoted_writes": not replica.in_recovery(standby),
        }
    )


def _cleanup_failover(ctx: DrillContext) -> None:
    """Fail back while nothing writes: the new writer's data takes the stack's server's place."""
    handle = ctx.handle
    standby: LocalPostgres | None = ctx.fault.pop("_replica", None)
    original = handle.postgres()
    if standby is None:
        return
    with _stack_marker(handle):
        if original.running():  # the fault never happened: only the replica goes
            with original.connect_admin() as conn:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("SELECT pg_reload_conf()")
            repoint_pooler(handle, original.settings.port)
            replica.remove(standby)
            return
        if replica.in_recovery(standby):
            replica.promote(standby)
        standby.stop("fast")
        replica.take_over_data(standby, original)
        original.start()
        original.wait_ready()
        with original.connect_admin() as conn:
            conn.execute("ALTER SYSTEM RESET primary_conninfo")
            conn.execute("SELECT pg_reload_conf()")
        repoint_pooler(handle, original.settings.port)
        replica.remove(standby)


def _judge_failover(ctx: DrillContext, result: DrillResult) -> list[Check]:
    promoted = bool(ctx.fault.get("promoted_writes"))
    return [
        Check(
            "the replica was promoted and took the writes",
            promoted,
            f"replica on port {ctx.fault.get('replica_port')} "
            + ("left recovery" if promoted else "still in recovery"),
        ),
        _outage_check(ctx, result, FAILOVER_OUTAGE_LIMIT_S),
    ]


# -- major-version switchover (blue/green) -------------------------------------------------------


def _prepare_major_upgrade(ctx: DrillContext) -> None:
    handle = ctx.handle
    blue = handle.postgres()
    ctx.fault["blue_restarted_for_logical"] = bluegreen.enable_logical_replication(blue)
    root = handle.plan.paths.root / GREEN_DIR
    try:
        with _stack_marker(handle):
            deployment = bluegreen.create_green(blue, root, free_port(), handle.record.database)
    except BaseException:
        bluegreen.abandon_green(blue, root, handle.record.database)
        raise
    ctx.fault["_deployment"] = deployment
    ctx.fault["blue_version"] = _server_version(blue)
    ctx.fault["green_version"] = _server_version(deployment.green)
    ctx.fault["green_build_s"] = {k: round(v, 3) for k, v in deployment.steps.items()}


def _major_upgrade(ctx: DrillContext) -> None:
    deployment: bluegreen.GreenDeployment = ctx.fault["_deployment"]
    steps = bluegreen.switchover(deployment, lambda port: repoint_pooler(ctx.handle, port))
    ctx.fault["switchover"] = {k: round(v, 3) for k, v in steps.items()}
    with deployment.green.connect_admin() as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    ctx.fault["writer_after"] = int(row[0]) if row else 0


def _cleanup_major_upgrade(ctx: DrillContext) -> None:
    deployment: bluegreen.GreenDeployment | None = ctx.fault.pop("_deployment", None)
    if deployment is None:
        return
    rows = _rows(deployment.green, deployment.database, ctx)
    ctx.fault["rows_on_green"] = rows
    bluegreen.switch_back(deployment, lambda port: repoint_pooler(ctx.handle, port))


def _rows(server: LocalPostgres, database: str, ctx: DrillContext) -> int:
    """This drill's rows on `server` (written while it was the writer, and copied before)."""
    conninfo = bluegreen._conninfo(server, database, password=True)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}.items WHERE name LIKE %s").format(
                psycopg.sql.Identifier(ctx.handle.schema)
            ),
            (ctx.storm.name_prefix + "%",),
        ).fetchone()
    return int(row[0]) if row else 0


def _judge_major_upgrade(ctx: DrillContext, result: DrillResult) -> list[Check]:
    blue_major = int(ctx.fault.get("blue_version", 0)) // 10000
    after = int(ctx.fault.get("writer_after", 0)) // 10000
    served_on_green = _served_after(ctx.storm.log.attempts, ctx.fault, result.fault_at)
    ctx.fault["acknowledged_on_green"] = served_on_green
    return [
        Check(
            "green runs the next major and took the writes",
            after == blue_major + 1 and served_on_green > 0,
            f"PostgreSQL {blue_major} -> {after}, {served_on_green} writes acknowledged after "
            "the switchover",
        ),
        _outage_check(ctx, result, SWITCHOVER_OUTAGE_LIMIT_S),
    ]


def _served_after(attempts: list[Attempt], fault: dict[str, Any], fault_at: float) -> int:
    moved = fault.get("switchover", {}).get("endpoint_moved_at_s")
    if moved is None:
        return 0
    return sum(1 for a in attempts if a.ok and a.start >= fault_at + float(moved))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "failover",
            "the writer crashes; its synchronous streaming replica is promoted and the pooler "
            "re-pointed",
            _failover,
            _judge_failover,
            prepare=_prepare_failover,
            cleanup=_cleanup_failover,
            lead_s=1.5,
            duration_s=10,
            small_duration_s=4,
        ),
        Scenario(
            "major-upgrade",
            "blue/green switchover to the next PostgreSQL major: blue read-only and its sessions "
            "terminated, green (logical replica) caught up, the pooler re-pointed",
            _major_upgrade,
            _judge_major_upgrade,
            prepare=_prepare_major_upgrade,
            cleanup=_cleanup_major_upgrade,
            lead_s=1.5,
            duration_s=10,
            small_duration_s=4,
        ),
    )
}
