"""The budget's Aurora and existing-database parts: where `max_connections` comes from, the read
pool, the failover plan and the auto-pause plan.

Pure (no Pulumi, no I/O) like `infra/budget.py`, which calls it; kept apart so the RDS-instance
budget reads as before. Every AWS figure here is cited by a test in tests/test_budget_cluster.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import AuroraSettings, StackSettings

# Aurora PostgreSQL's default max_connections for provisioned classes:
# LEAST({DBInstanceClassMemory/9531392}, 5000), the same divisor and cap as RDS for PostgreSQL
# (Aurora user guide, "Maximum connections to an Aurora PostgreSQL DB instance").
AURORA_MEMORY_DIVISOR = 9_531_392
AURORA_MAX_CONNECTIONS_CAP = 5000
# Aurora Serverless v2 (PostgreSQL): max_connections follows the memory of the *maximum* ACUs,
# published as a table by maximum ACU; with a minimum of 0 or 0.5 ACU it is capped at 2,000
# (Aurora user guide, "Aurora Serverless v2 capacity" / "Maximum connections for Aurora
# Serverless v2"; AWS re:Post "Working of max_connections for Aurora PostgreSQL Serverless"
# shows 189 at 1 ACU, 3,360 at 16 and 5,000 from 32). A maximum between two published points
# takes the lower one: the kit writes the figure into the parameter group, so erring low only
# leaves slots unused.
SERVERLESS_V2_MAX_CONNECTIONS: tuple[tuple[float, int], ...] = ((1, 189), (16, 3360), (32, 5000))
SERVERLESS_V2_LOW_MIN_CAP = 2000
SERVERLESS_V2_LOW_MIN_ACU = 0.5
# Aurora endpoints' DNS records live 5 s (AWS Database Blog, "Improve application availability
# on Amazon Aurora"): PgBouncer re-resolves no later than this after a failover.
AURORA_DNS_TTL_S = 5
# A paused Serverless v2 instance resumes in about 15 s, about 30 s after more than 24 h paused
# (Aurora user guide, "Scaling to zero ACUs with automatic pause and resume").
AUTO_PAUSE_RESUME_S = 15
AUTO_PAUSE_RESUME_LONG_S = 30
# The read pool's database name: the application database's name with this suffix.
READ_POOL_SUFFIX = "_ro"


@dataclass(frozen=True)
class ReadPoolBudget:
    """The read-only path: the reader endpoint behind a second pool (or a proxy endpoint).

    The reader endpoint spreads connections over the readers by DNS, which balances nothing
    strictly: every read connection may land on one reader, so the read pool's peak is budgeted
    against one reader's ceiling (each reader has the writer's class, hence its max_connections).
    """

    readers: int
    reader_max_connections: int
    reader_ceiling: int
    database_alias: str
    # PgBouncer: per-process server connections of the read pool and its peak over every task.
    max_db_connections: int | None
    server_connections_peak: int
    # PgBouncer: the read pool's `pool_size` per process (its max less the reserve pool).
    pool_size: int | None = None


@dataclass(frozen=True)
class FailoverPlan:
    """What a failover does to the timeout chain (Aurora clusters only)."""

    write_outage_s: int
    dns_max_ttl_s: int
    server_check_delay_s: int
    # Per function: True if connect timeout + retry budget outlives the outage.
    rides_through: dict[str, bool]


@dataclass(frozen=True)
class AutoPausePlan:
    """Serverless v2 with a minimum of 0 ACU: what lets it pause and what a resume costs."""

    seconds_until_auto_pause: int
    server_idle_timeout_s: int
    resume_s: int
    # Pooler waits (setting -> seconds) a first request after a pause spends waiting.
    pooler_waits: dict[str, int]


def cluster_max_connections(settings: StackSettings) -> tuple[int, str] | None:
    """`max_connections` of each Aurora instance and its source; None for the other kinds."""
    db = settings.database
    if db.kind == "existing":
        assert db.max_connections is not None  # the settings require it for this kind
        ex = db.existing
        what = (
            f"cluster {ex.cluster_identifier}"
            if ex.is_cluster
            else f"instance {ex.instance_identifier}"
        )
        return db.max_connections, (
            f"database.max_connections: what the parameter group of the existing {what} sets "
            "(preview and `slotguard verify` compare it with the live database)"
        )
    if db.kind != "aurora":
        return None
    if db.max_connections is not None:
        return db.max_connections, "explicit setting database.max_connections"
    return serverless_or_class(db.aurora)


def serverless_or_class(aurora: AuroraSettings) -> tuple[int, str] | None:
    """The default for an Aurora class: AWS's table for Serverless v2, the formula otherwise."""
    if aurora.serverless:
        return serverless_v2_max_connections(aurora.min_capacity_acu, aurora.max_capacity_acu)
    from infra.budget import RDS_CLASS_MEMORY_GIB  # noqa: PLC0415 - one table for both engines

    gib = RDS_CLASS_MEMORY_GIB.get(aurora.instance_class)
    if gib is None:
        return None
    memory = int(gib * 1024**3)
    value = min(memory // AURORA_MEMORY_DIVISOR, AURORA_MAX_CONNECTIONS_CAP)
    return value, (
        f"Aurora: LEAST({aurora.instance_class} {gib:g} GiB/{AURORA_MEMORY_DIVISOR}, "
        f"{AURORA_MAX_CONNECTIONS_CAP})"
    )


def serverless_v2_max_connections(min_acu: float, max_acu: float) -> tuple[int, str]:
    """AWS's Serverless v2 default: the table by maximum ACU, capped by the minimum ACU."""
    point, value = SERVERLESS_V2_MAX_CONNECTIONS[0]
    for acu, connections in SERVERLESS_V2_MAX_CONNECTIONS:
        if max_acu >= acu:
            point, value = acu, connections
    source = f"Serverless v2 max {max_acu:g} ACU: AWS's table at {point:g} ACU = {value}"
    if min_acu <= SERVERLESS_V2_LOW_MIN_ACU and value > SERVERLESS_V2_LOW_MIN_CAP:
        value = SERVERLESS_V2_LOW_MIN_CAP
        source += f", capped at {SERVERLESS_V2_LOW_MIN_CAP} by min {min_acu:g} ACU"
    return value, source


def read_pool(
    settings: StackSettings,
    *,
    max_connections: int,
    limit: int,
    peak_processes: int | None,
    reserve_pool: int,
    out: list[tuple[str, str]],
) -> ReadPoolBudget | None:
    """The read pool of an Aurora cluster with readers (None without readers)."""
    db = settings.database
    if db.kind != "aurora" or db.aurora.readers == 0:
        return None
    ceiling = max_connections - db.reserved_connections - db.admin_margin
    per_process: int | None = None
    if peak_processes:
        per_process = limit // peak_processes
        if per_process - reserve_pool < 1:
            out.append(
                (
                    "database.aurora.readers",
                    f"one reader's limit {limit} split over {peak_processes} PgBouncer processes "
                    f"at the peak leaves {per_process} server connections per process, not "
                    f"enough for a read pool of 1 plus the reserve pool {reserve_pool}",
                )
            )
        peak = per_process * peak_processes
    else:
        peak = limit
    return ReadPoolBudget(
        readers=db.aurora.readers,
        reader_max_connections=max_connections,
        reader_ceiling=ceiling,
        database_alias=f"{db.name}{READ_POOL_SUFFIX}",
        max_db_connections=per_process,
        server_connections_peak=peak,
        pool_size=max(per_process - reserve_pool, 1) if per_process is not None else None,
    )


def failover_plan(
    settings: StackSettings, windows: dict[str, float], warnings: list[str]
) -> FailoverPlan | None:
    """Aurora only: the write outage of a failover against each function's connect window.

    A function whose connect timeout + retry budget outlives the outage rides through it (the
    helper reconnects and the pooler reaches the new writer); one that does not fails with the
    helper's clear "database unavailable" error after its window. Both are acceptable; the
    budget says which, as a warning for the second.
    """
    db = settings.database
    if db.kind != "aurora":
        return None
    outage = db.aurora.failover_write_outage_s
    rides = {name: window >= outage for name, window in windows.items()}
    for name, ok in sorted(rides.items()):
        if not ok:
            warnings.append(
                f"functions.{name}: connect timeout + retry budget {windows[name]:g} s is "
                f"shorter than a failover's write outage {outage} s "
                "(database.aurora.failover_write_outage_s): during a failover it fails with a "
                f"clear error instead of waiting; raise functions.{name}.retry_budget_s to "
                "ride through"
            )
    return FailoverPlan(
        write_outage_s=outage,
        dns_max_ttl_s=AURORA_DNS_TTL_S,
        # Idle server connections are checked before reuse at least this often: a connection
        # to the old writer is found broken before a client's transaction is sent on it.
        server_check_delay_s=AURORA_DNS_TTL_S,
        rides_through=rides,
    )


def auto_pause_plan(
    settings: StackSettings,
    *,
    server_idle_timeout_s: int | None,
    pooler_waits: dict[str, int],
    out: list[tuple[str, str]],
    warnings: list[str],
) -> AutoPausePlan | None:
    """Serverless v2 with min 0 ACU: idle pooled connections must close, a resume must fit.

    Aurora pauses an instance only after `seconds_until_auto_pause` without user connections; a
    pooler keeping idle server connections open keeps it awake for good. A paused instance takes
    about 15 s to resume (about 30 s after more than a day paused), and the first burst waits
    for it: with PgBouncer a client is logged in by the pooler itself and waits in the pool's
    queue while PgBouncer connects to the resuming instance, so the queue wait and the server
    connect timeout (`pooler_waits`, setting -> seconds) must each cover a resume; the existing
    timeout chain then checks that the queue wait still fits every function's timeout.
    """
    db = settings.database
    if db.kind != "aurora" or not db.aurora.auto_pause:
        return None
    a = db.aurora
    if settings.pooler.kind == "rds-proxy":
        out.append(
            (
                "database.aurora.min_capacity_acu",
                "0 ACU (auto-pause) with pooler.kind rds-proxy: RDS Proxy keeps connections to "
                "its targets open, so the cluster would never pause; use min_capacity_acu 0.5 "
                "or pooler.kind pgbouncer",
            )
        )
    if server_idle_timeout_s is not None and server_idle_timeout_s >= a.seconds_until_auto_pause:
        out.append(
            (
                "pooler.pgbouncer.server_idle_timeout_s",
                f"server_idle_timeout {server_idle_timeout_s} s is not below "
                f"seconds_until_auto_pause {a.seconds_until_auto_pause} s: PgBouncer's idle "
                "server connections would keep the cluster from ever pausing; lower it or "
                "raise database.aurora.seconds_until_auto_pause",
            )
        )
    for setting, seconds in sorted(pooler_waits.items()):
        if seconds < AUTO_PAUSE_RESUME_S:
            out.append(
                (
                    setting,
                    f"{seconds} s is shorter than the {AUTO_PAUSE_RESUME_S} s a paused "
                    "Serverless v2 instance takes to resume (database.aurora.min_capacity_acu "
                    f"0): the first burst after a pause would fail; raise it to "
                    f"{AUTO_PAUSE_RESUME_S} (and the functions' timeout_s with it), or set "
                    "min_capacity_acu 0.5",
                )
            )
        elif seconds < AUTO_PAUSE_RESUME_LONG_S:
            warnings.append(
                f"{setting}: {seconds} s covers a resume after a short pause "
                f"({AUTO_PAUSE_RESUME_S} s) but not after more than a day paused "
                f"({AUTO_PAUSE_RESUME_LONG_S} s): the first request after a long pause may fail"
            )
    return AutoPausePlan(
        seconds_until_auto_pause=a.seconds_until_auto_pause,
        server_idle_timeout_s=server_idle_timeout_s or 0,
        resume_s=AUTO_PAUSE_RESUME_S,
        pooler_waits=dict(pooler_waits),
    )


def pgbouncer_fields(
    budget_read: ReadPoolBudget | None, failover: FailoverPlan | None
) -> dict[str, str]:
    """The `PGBOUNCER_*` variables (pgbouncer/environment.py) of the read pool and failover.

    Empty for a stack without either, so the task definition of an RDS-instance stack is what
    it always was. The read pool's host is added by the caller (the reader endpoint).
    """
    env: dict[str, str] = {}
    if failover is not None:
        env["DNS_MAX_TTL_S"] = str(failover.dns_max_ttl_s)
        env["SERVER_CHECK_DELAY_S"] = str(failover.server_check_delay_s)
        env["WRITER_GUARD"] = "on"
    if budget_read is not None and budget_read.max_db_connections is not None:
        env["READ_DB_ALIAS"] = budget_read.database_alias
        env["READ_POOL_SIZE"] = str(budget_read.pool_size)
        env["READ_MAX_DB_CONNECTIONS"] = str(budget_read.max_db_connections)
    return env
