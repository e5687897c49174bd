"""The connection budget: every number that decides whether a burst is survived, derived once.

Pure and typed (no Pulumi, no I/O). The Pulumi program, the PgBouncer configuration, the
`app_user` role, the functions' environment, the alarms, the policy pack and the local target all
*render* this budget; none of them invents a number of its own. `compute_budget` refuses settings
whose numbers do not add up, naming the setting and showing the arithmetic.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from infra.budget_cluster import (
    AutoPausePlan,
    FailoverPlan,
    ReadPoolBudget,
    auto_pause_plan,
    cluster_max_connections,
    failover_plan,
    read_pool,
)
from infra.pooler_logins import admission
from infra.settings import StackSettings
from infra.workloads import (
    DEFAULT_WORKLOAD,
    PoolShape,
    WorkloadBudget,
    compute_workloads,
    longest_idle_in_transaction_s,
    statement_timeout,
    workload_of,
)

# RDS's default `max_connections` formula is LEAST(DBInstanceClassMemory/9531392, 5000).
RDS_MEMORY_DIVISOR = 9_531_392
RDS_MAX_CONNECTIONS_CAP = 5000
# An internal NLB drops a TCP flow idle for 350 s without telling either side.
NLB_IDLE_TIMEOUT_S = 350
# Time a function keeps, after its last database wait, to build and send its answer.
ANSWER_RESERVE_S = 1.0
# Ports clients use: PgBouncer's conventional port behind the NLB; RDS Proxy listens on 5432.
PGBOUNCER_PORT = 6432
RDS_PROXY_PORT = 5432
# Extra file descriptors a PgBouncer process needs besides client and server sockets
# (listen sockets, log, DNS, admin console).
PGBOUNCER_FD_MARGIN = 64
# Lambda refuses reserved concurrency that leaves fewer than 100 executions unreserved.
LAMBDA_UNRESERVED_MINIMUM = 100
# The bootstrap function's own reservation: one instance at a time, so two deploys never race on
# the same DDL. It counts against the account's quota like every other function's.
BOOTSTRAP_RESERVED_CONCURRENCY = 1
# Kernel cap on a listen backlog (net.core.somaxconn on current kernels).
SOMAXCONN = 4096
# -- pooler operations (tests/test_budget_operations.py cites the sources) --------------------
# Fargate waits at most 120 s between SIGTERM and SIGKILL (ContainerDefinition.stopTimeout).
FARGATE_STOP_TIMEOUT_MAX_S = 120
# The entrypoint's safe shutdown (SIGINT to PgBouncer) ends this long before ECS's SIGKILL.
DRAIN_MARGIN_S = 5
# NLB target group health check: a TCP connect every 10 s, two results to change state.
NLB_HEALTH_INTERVAL_S = 10
NLB_HEALTHY_THRESHOLD = 2

# PgBouncer reads `max_prepared_statements` from 1.21; the kit's default size from then on.
PREPARED_STATEMENTS_SINCE = (1, 21)
DEFAULT_MAX_PREPARED_STATEMENTS = 200
# psycopg 3's default `prepare_threshold`: a query is prepared once it ran 5 times on a
# connection, so one-off queries are never prepared; the kept connection makes repeats common.
PSYCOPG_PREPARE_THRESHOLD = 5

# Memory in GiB of the common RDS instance classes (AWS's published figures). RDS computes the
# default from DBInstanceClassMemory, which is somewhat below the nominal figure; the kit always
# writes its number into the parameter group, so what the budget says is what the server uses.
RDS_CLASS_MEMORY_GIB: dict[str, float] = {
    "db.t3.micro": 1,
    "db.t3.small": 2,
    "db.t3.medium": 4,
    "db.t3.large": 8,
    "db.t3.xlarge": 16,
    "db.t3.2xlarge": 32,
    "db.t4g.micro": 1,
    "db.t4g.small": 2,
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    "db.t4g.xlarge": 16,
    "db.t4g.2xlarge": 32,
    "db.m5.large": 8,
    "db.m5.xlarge": 16,
    "db.m5.2xlarge": 32,
    "db.m5.4xlarge": 64,
    "db.m5.8xlarge": 128,
    "db.m5.12xlarge": 192,
    "db.m5.16xlarge": 256,
    "db.m5.24xlarge": 384,
    "db.m6g.large": 8,
    "db.m6g.xlarge": 16,
    "db.m6g.2xlarge": 32,
    "db.m6g.4xlarge": 64,
    "db.m6g.8xlarge": 128,
    "db.m6g.12xlarge": 192,
    "db.m6g.16xlarge": 256,
    "db.m6i.large": 8,
    "db.m6i.xlarge": 16,
    "db.m6i.2xlarge": 32,
    "db.m6i.4xlarge": 64,
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.m7g.2xlarge": 32,
    "db.m7g.4xlarge": 64,
    "db.m7g.8xlarge": 128,
    "db.m7g.12xlarge": 192,
    "db.m7g.16xlarge": 256,
    "db.r5.large": 16,
    "db.r5.xlarge": 32,
    "db.r5.2xlarge": 64,
    "db.r5.4xlarge": 128,
    "db.r6g.large": 16,
    "db.r6g.xlarge": 32,
    "db.r6g.2xlarge": 64,
    "db.r6g.4xlarge": 128,
    "db.r6i.large": 16,
    "db.r6i.xlarge": 32,
    "db.r6i.2xlarge": 64,
    "db.r6i.4xlarge": 128,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
    "db.r7g.4xlarge": 128,
}


@dataclass(frozen=True)
class Figure:
    """One derived number: where it came from and what it must stay within."""

    key: str
    value: float
    unit: str
    source: str
    limit: float | None = None
    limit_source: str = ""

    @property
    def headroom(self) -> float | None:
        return None if self.limit is None else self.limit - self.value


@dataclass(frozen=True)
class Violation:
    """A broken invariant: the setting to change and the arithmetic that fails."""

    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class BudgetError(ValueError):
    """Settings whose numbers do not add up."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(f"the connection budget does not hold:\n{lines}")


@dataclass(frozen=True)
class PgBouncerBudget:
    """Per-process PgBouncer numbers (what `pgbouncer.ini` says) and their totals."""

    version: str
    tasks: int
    processes_per_task: int
    processes: int
    pool_size: int
    reserve_pool: int
    reserve_pool_timeout_s: float
    max_db_connections: int
    server_connections_per_task: int
    server_connections_total: int
    max_client_conn: int
    client_capacity: int
    usable_client_capacity: int
    listen_backlog: int
    file_descriptors: int
    query_wait_timeout_s: int
    client_idle_timeout_s: int
    server_idle_timeout_s: int
    server_lifetime_s: int
    server_connect_timeout_s: int
    idle_transaction_timeout_s: int
    tcp_keepalive_idle_s: int
    tcp_keepalive_interval_s: int
    tcp_keepalive_count: int
    deploy: PoolerDeployPlan
    port: int = PGBOUNCER_PORT
    # -- prepared statements and login cost (see _pgbouncer_prepared, _pgbouncer_logins) ----------
    max_prepared_statements: int = 0
    login_rate_per_process: float = 0.0
    cold_burst_clients: int = 0
    cold_burst_admission_s: float = 0.0


@dataclass(frozen=True)
class PoolerDeployPlan:
    """How the PgBouncer service is deployed and scaled without exceeding the pooler's limit.

    A rolling deploy starts `surge_tasks` new tasks beside the running ones (ECS's
    maximumPercent), waits until they are healthy, then stops old ones: the NLB deregisters a
    stopping task (no new connections) for `deregistration_delay_s`, then ECS sends SIGTERM; the
    entrypoint turns it into PgBouncer's safe shutdown (SIGINT: each client's running transaction
    finishes, then the client is disconnected and reconnects to a new task) for at most
    `drain_timeout_s`, within ECS's `stop_timeout_s`. Scaling in stops a task the same way.
    Every task's pool is sized for `peak_tasks`: the most tasks that ever run at once.
    """

    min_tasks: int
    max_tasks: int
    surge_tasks: int
    maximum_percent: int
    minimum_healthy_percent: int
    peak_tasks: int
    server_connections_min: int
    server_connections_max: int
    server_connections_peak: int
    pool_size_if_fixed: int
    cpu_target_percent: int
    stop_timeout_s: int
    drain_timeout_s: int
    deregistration_delay_s: int
    longest_transaction_s: int
    task_stop_worst_s: int
    deploy_worst_s: int

    @property
    def scales(self) -> bool:
        return self.max_tasks > self.min_tasks


@dataclass(frozen=True)
class RdsProxyBudget:
    """RDS Proxy's default target group settings."""

    max_connections_percent: int
    max_idle_connections_percent: int
    proxy_connections: int
    connection_borrow_timeout_s: int
    idle_client_timeout_s: int
    iam_auth: bool
    port: int = RDS_PROXY_PORT


@dataclass(frozen=True)
class AppUserBudget:
    """What the bootstrap sets on the `app_user` role."""

    name: str
    migration_role: str
    schema_name: str
    connection_limit: int
    statement_timeout_ms: int
    idle_in_transaction_session_timeout_ms: int
    lock_timeout_ms: int


@dataclass(frozen=True)
class FunctionBudget:
    """One function's limits and the timeout chain that has to fit in it."""

    name: str
    timeout_s: int
    reserved_concurrency: int | None  # None: unreserved, in the account's shared pool
    connect_timeout_s: int
    retry_budget_s: float
    idle_discard_s: int
    queue_wait_s: int
    worst_connect_s: float
    worst_query_s: float
    # The workload whose role the function logs in as (`workloads`; `default` is app_user).
    workload: str = DEFAULT_WORKLOAD


@dataclass(frozen=True)
class AlarmThresholds:
    """Every alarm threshold, as counts or durations the metrics are compared with."""

    period_s: int
    evaluation_periods: int
    db_connections_warn: int
    db_connections_critical: int
    db_connections_bypass: int
    pooler_waiting_clients: int | None
    pooler_oldest_wait_s: float | None
    pooler_client_connections: int | None
    proxy_pinned_connections: int | None
    proxy_borrow_latency_us: int | None
    function_throttles: int = 1
    function_errors: int = 1


@dataclass(frozen=True)
class Budget:
    """The whole budget of one stack."""

    stack: str
    max_connections: int
    max_connections_source: str
    reserved_connections: int
    admin_margin: int
    pooler_ceiling: int
    pooler_kind: str
    pooler_server_connections: int
    pooler_port: int
    # The most server connections the pooler may hold at once (a deploy's surge at max_tasks
    # included) and the limit it is sized within: the ceiling, or less where the warning alarm
    # needs it (`warning threshold - observer_connections - 1`).
    pooler_planned_max: int
    pooler_limit: int
    observer_connections: int
    database_idle_in_transaction_ms: int
    pgbouncer: PgBouncerBudget | None
    rds_proxy: RdsProxyBudget | None
    app_user: AppUserBudget
    functions: dict[str, FunctionBudget]
    alarms: AlarmThresholds
    figures: tuple[Figure, ...] = field(repr=False)
    # Numbers that hold but deserve attention (each with its arithmetic).
    warnings: tuple[str, ...] = ()
    # The workloads besides the default one (app_user): empty unless the stack names some.
    workloads: dict[str, WorkloadBudget] = field(default_factory=dict)

    def role_of(self, function: str) -> str:
        """The login role a function uses: its workload's, app_user's by default."""
        workload = self.workloads.get(self.functions[function].workload)
        return workload.role if workload is not None else self.app_user.name

    @property
    def default_pool_size(self) -> int | None:
        """PgBouncer's `default_pool_size` per process: the pool less the workloads' pools."""
        if self.pgbouncer is None:
            return None
        return self.pgbouncer.pool_size - sum(w.pool_size or 0 for w in self.workloads.values())

    # The most function instances (one client connection each) the pooler may see at once:
    # the reservations, plus the account's whole unreserved pool when a function is unreserved.
    client_demand: int = 0
    client_demand_text: str = ""

    @property
    def bootstrap_reserved_concurrency(self) -> int | None:
        """The bootstrap's reservation: 1 where the stack reserves at all, else unreserved.

        Its advisory lock (functions/bootstrap.py LOCK_KEY) already keeps two runs apart; the
        reservation only adds a bound, which an account too small to reserve cannot give.
        """
        reserves = any(f.reserved_concurrency is not None for f in self.functions.values())
        return BOOTSTRAP_RESERVED_CONCURRENCY if reserves else None

    # -- Aurora and existing databases (infra/budget_cluster.py) ---------------------------------
    database_kind: str = "rds-instance"
    read_pool: ReadPoolBudget | None = None
    failover: FailoverPlan | None = None
    auto_pause: AutoPausePlan | None = None
    # Serverless v2's (min, max) ACUs: the capacity alarms and the dashboard's capacity line.
    serverless_acu: tuple[float, float] | None = None

    @property
    def reserved_concurrency_total(self) -> int:
        """Every reservation the stack makes on the account: its functions' plus the bootstrap's."""
        return reserved_total([f.reserved_concurrency for f in self.functions.values()])

    def function_environment(self, name: str) -> dict[str, str]:
        """The numbers a function reads from its environment (host and secret come from infra)."""
        fn = self.functions[name]
        return {
            "DB_PORT": str(self.pooler_port),
            "DB_USER": self.role_of(name),
            "DB_SSLMODE": "verify-full",
            "DB_CONNECT_TIMEOUT_S": str(fn.connect_timeout_s),
            "DB_IDLE_DISCARD_S": str(fn.idle_discard_s),
            "DB_RETRY_BUDGET_S": f"{fn.retry_budget_s:g}",
            "DB_RETRIES": "on",
            "DB_PREPARE_THRESHOLD": self.prepare_threshold,
            # The read-only path's database (the read pool's alias with PgBouncer); its host
            # comes from infra. Absent: the stack has no readers and handlers read via writes.
            **({"DB_READ_NAME": self.read_pool.database_alias} if self.read_pool else {}),
        }

    @property
    def prepare_threshold(self) -> str:
        """psycopg's `prepare_threshold` for the functions: only where the pooler keeps them.

        PgBouncer 1.21+ with `max_prepared_statements` > 0 tracks protocol-level prepared
        statements across server connections. RDS Proxy is left off: its pinning conditions
        (docs/drivers.md) list prepared statements, and a pinned session defeats the proxy.
        """
        pb = self.pgbouncer
        if pb is not None and pb.max_prepared_statements > 0:
            return str(PSYCOPG_PREPARE_THRESHOLD)
        return "off"

    def bootstrap_event(self, database: str) -> dict[str, Any]:
        """What the bootstrap function is invoked with: the roles as the budget decided them.

        The same event on AWS (a Lambda invocation resource) and on the local target.
        """
        au = self.app_user
        return {
            "app_user": {
                "name": au.name,
                "connection_limit": au.connection_limit,
                # The bootstrap holds the limit within the running server's max_connections too.
                "admin_margin": self.admin_margin,
                "statement_timeout_ms": au.statement_timeout_ms,
                "idle_in_transaction_session_timeout_ms": au.idle_in_transaction_session_timeout_ms,
                "lock_timeout_ms": au.lock_timeout_ms,
                "search_path": [au.schema_name],
            },
            "migration_role": {"name": au.migration_role},
            "database": database,
            "schema": au.schema_name,
            **self._workload_roles(),
        }

    def _workload_roles(self) -> dict[str, Any]:
        """The workloads' roles for the bootstrap; no key at all without workloads."""
        if not self.workloads:
            return {}
        return {
            "workloads": [
                {
                    "name": w.role,
                    "connection_limit": w.connection_limit,
                    "admin_margin": self.admin_margin,
                    "statement_timeout_ms": w.statement_timeout_ms,
                    "idle_in_transaction_session_timeout_ms": (
                        w.idle_in_transaction_session_timeout_ms
                    ),
                    "lock_timeout_ms": w.lock_timeout_ms,
                    "search_path": [self.app_user.schema_name],
                }
                for w in self.workloads.values()
            ]
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["figures"] = [{**asdict(f), "headroom": f.headroom} for f in self.figures]
        return data


def reserved_total(reservations: list[int | None]) -> int:
    """Functions' reservations plus the bootstrap's 1, which it takes only beside others."""
    reserved = [r for r in reservations if r is not None]
    return sum(reserved) + (BOOTSTRAP_RESERVED_CONCURRENCY if reserved else 0)


def client_demand(settings: StackSettings) -> tuple[int, str]:
    """The most instances of the stack's functions that can run at once, with the arithmetic.

    A reserved function runs at most its reservation. Unreserved functions share the account's
    unreserved pool: together at most the quota less every reservation, this stack's included
    (other stacks' reservations only make the pool smaller). Each instance holds one client
    connection; the bootstrap connects to the database itself, not through the pooler.
    """
    fns = sorted(settings.functions.items())
    reserved = {n: f.reserved_concurrency for n, f in fns if f.reserved_concurrency is not None}
    unreserved = [n for n, f in fns if f.reserved_concurrency is None]
    parts = [f"{n} {r}" for n, r in reserved.items()]
    demand = sum(reserved.values())
    if unreserved:
        total = reserved_total([f.reserved_concurrency for _, f in fns])
        pool = max(settings.lambda_concurrency_quota - total, 0)
        demand += pool
        parts.append(
            f"unreserved {', '.join(unreserved)} up to lambda_concurrency_quota "
            f"{settings.lambda_concurrency_quota} - {total} reserved = {pool}"
        )
    return demand, " + ".join(parts)


def reserved_text(settings: StackSettings) -> str:
    """The reserved slots' arithmetic, e.g. `3 superuser_reserved - 2 rds_superuser_reserved`.

    On RDS for PostgreSQL ordinary roles get max_connections - superuser_reserved_connections -
    rds.rds_superuser_reserved_connections (AWS knowledge center,
    rds-postgresql-error-connection-slots), and PostgreSQL 16 keeps `reserved_connections`
    from them too.
    """
    db = settings.database
    parts = [
        f"{db.reserved_connections} superuser_reserved",
        f"{db.rds_superuser_reserved_connections} rds_superuser_reserved",
    ]
    if db.pg_reserved_connections:
        parts.append(f"{db.pg_reserved_connections} reserved_connections")
    return " - ".join(parts)


def _class_memory_gib(instance_class: str) -> float | None:
    return RDS_CLASS_MEMORY_GIB.get(instance_class)


def _max_connections(settings: StackSettings, out: list[Violation]) -> tuple[int, str]:
    db = settings.database
    if db.kind != "rds-instance":
        found = cluster_max_connections(settings)
        if found is None:
            out.append(
                Violation(
                    "database.max_connections",
                    f"Aurora instance class {db.aurora.instance_class} is not in the kit's "
                    "memory table; set database.max_connections explicitly",
                )
            )
            return 0, "unknown"
        return found
    if db.max_connections is not None:
        return db.max_connections, "explicit setting database.max_connections"
    gib = _class_memory_gib(db.instance_class)
    if gib is None:
        close = difflib.get_close_matches(db.instance_class, RDS_CLASS_MEMORY_GIB, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        # Every later figure divides max_connections: without it they would only repeat the
        # cause as follow-on errors (max_connections 0, a ceiling of -6), so stop here.
        raise BudgetError(
            [
                Violation(
                    "database.max_connections",
                    f"instance class {db.instance_class} is not in the kit's memory table; "
                    f"{hint}fix database.instance_class, or set database.max_connections "
                    "explicitly",
                )
            ]
        )
    memory = int(gib * 1024**3)
    value = min(memory // RDS_MEMORY_DIVISOR, RDS_MAX_CONNECTIONS_CAP)
    return value, (
        f"LEAST({db.instance_class} {gib:g} GiB/{RDS_MEMORY_DIVISOR}, {RDS_MAX_CONNECTIONS_CAP})"
    )


def deployment_percents(tasks: int, surge_tasks: int) -> tuple[int, int]:
    """ECS `deploymentConfiguration` (maximumPercent, minimumHealthyPercent) for the surge.

    ECS rounds maximumPercent x desired down and minimumHealthyPercent x desired up. With a
    surge, the smallest maximum that lets `surge_tasks` start beside `tasks`, and no task
    stopped before its replacement is healthy; without one, stop one task at a time.
    """
    if surge_tasks == 0:
        return 100, 100 * (tasks - 1) // tasks
    return math.ceil(100 * (tasks + surge_tasks) / tasks), 100


def peak_tasks(max_tasks: int, maximum_percent: int) -> int:
    """The most tasks ECS runs at once: a deploy at the largest desired count."""
    return max_tasks * maximum_percent // 100


def _pgbouncer(
    settings: StackSettings, ceiling: int, ceiling_text: str, out: list[Violation]
) -> PgBouncerBudget:
    """PgBouncer's numbers; `ceiling` is the limit the pooler's peak must stay within."""
    pb = settings.pooler.pgbouncer
    processes = pb.tasks * pb.processes_per_task
    shape = f"{pb.tasks} tasks x {pb.processes_per_task} processes"
    max_percent, min_healthy = deployment_percents(pb.tasks, pb.deploy_surge_tasks)
    peak = peak_tasks(pb.scaling_maximum, max_percent)
    peak_processes = peak * pb.processes_per_task
    peak_shape = (
        f"{peak} tasks at the peak ({pb.scaling_maximum} max_tasks at deploymentMaximumPercent "
        f"{max_percent}) x {pb.processes_per_task} processes"
    )
    if pb.pool_size is None:
        per_process = ceiling // peak_processes if peak_processes else 0
        pool_size = per_process - pb.reserve_pool
        if pool_size < 1:
            setting = (
                "pooler.pgbouncer.max_tasks"
                if pb.scaling_maximum > pb.tasks
                else "pooler.pgbouncer.deploy_surge_tasks"
                if pb.deploy_surge_tasks
                else "pooler.pgbouncer.tasks"
            )
            out.append(
                Violation(
                    setting,
                    f"{ceiling_text} split over {peak_shape} leaves {per_process} server "
                    f"connections per process, not enough for a pool of 1 plus the reserve "
                    f"pool {pb.reserve_pool}; use fewer tasks, max_tasks, surge tasks or "
                    "processes, a smaller reserve_pool, or a larger database",
                )
            )
            pool_size = max(pool_size, 1)
    else:
        pool_size = pb.pool_size
    per_process = pool_size + pb.reserve_pool
    total = processes * per_process
    peak_total = peak_processes * per_process
    if peak_total > ceiling:
        setting = (
            "pooler.pgbouncer.pool_size"
            if pb.pool_size is not None
            else "pooler.pgbouncer.reserve_pool"
        )
        fits = (ceiling // peak_processes if peak_processes else 0) - pb.reserve_pool
        derive = (
            f"; remove pooler.pgbouncer.pool_size and the kit derives the largest that fits "
            f"({fits} per process)"
            if pb.pool_size is not None and fits >= 1
            else ""
        )
        out.append(
            Violation(
                setting,
                f"pooler server connections {peak_shape} x ({pool_size} pool + "
                f"{pb.reserve_pool} reserve) = {peak_total} exceed the {ceiling_text}{derive}",
            )
        )
    deploy = _deploy_plan(
        settings,
        max_percent=max_percent,
        min_healthy=min_healthy,
        peak=peak,
        per_task=pb.processes_per_task * per_process,
        ceiling=ceiling,
        out=out,
    )
    capacity = processes * pb.max_client_conn
    usable = capacity * (100 - pb.client_headroom_percent) // 100
    demand, parts = client_demand(settings)
    if demand > usable:
        out.append(
            Violation(
                "pooler.pgbouncer.max_client_conn",
                f"functions' reserved concurrency {parts} = {demand} exceeds the pooler's client "
                f"capacity {shape} x {pb.max_client_conn} max_client_conn = {capacity} less "
                f"{pb.client_headroom_percent}% headroom = {usable}",
            )
        )
    if pb.client_idle_timeout_s >= NLB_IDLE_TIMEOUT_S:
        out.append(
            Violation(
                "pooler.pgbouncer.client_idle_timeout_s",
                f"client_idle_timeout {pb.client_idle_timeout_s} s must be below the NLB's idle "
                f"timeout {NLB_IDLE_TIMEOUT_S} s",
            )
        )
    keepalive_interval, keepalive_count = 10, 3
    if pb.tcp_keepalive_idle_s >= NLB_IDLE_TIMEOUT_S:
        out.append(
            Violation(
                "pooler.pgbouncer.tcp_keepalive_idle_s",
                f"tcp_keepalive_idle {pb.tcp_keepalive_idle_s} s must be below the NLB's idle "
                f"timeout {NLB_IDLE_TIMEOUT_S} s",
            )
        )
    role_idle_tx_s = math.ceil(settings.app_user.idle_in_transaction_session_timeout_ms / 1000)
    return PgBouncerBudget(
        version=pb.version,
        tasks=pb.tasks,
        processes_per_task=pb.processes_per_task,
        processes=processes,
        pool_size=pool_size,
        reserve_pool=pb.reserve_pool,
        reserve_pool_timeout_s=pb.reserve_pool_timeout_s,
        max_db_connections=per_process,
        server_connections_per_task=pb.processes_per_task * per_process,
        server_connections_total=total,
        max_client_conn=pb.max_client_conn,
        client_capacity=capacity,
        usable_client_capacity=usable,
        listen_backlog=min(pb.max_client_conn, SOMAXCONN),
        file_descriptors=pb.max_client_conn + per_process + PGBOUNCER_FD_MARGIN,
        query_wait_timeout_s=pb.query_wait_timeout_s,
        client_idle_timeout_s=pb.client_idle_timeout_s,
        server_idle_timeout_s=pb.server_idle_timeout_s,
        server_lifetime_s=pb.server_lifetime_s,
        server_connect_timeout_s=pb.server_connect_timeout_s,
        # A backstop behind the role's own timeout, which fires first and says why.
        idle_transaction_timeout_s=role_idle_tx_s + 5,
        tcp_keepalive_idle_s=pb.tcp_keepalive_idle_s,
        tcp_keepalive_interval_s=keepalive_interval,
        tcp_keepalive_count=keepalive_count,
        deploy=deploy,
    )


def _deploy_plan(
    settings: StackSettings,
    *,
    max_percent: int,
    min_healthy: int,
    peak: int,
    per_task: int,
    ceiling: int,
    out: list[Violation],
) -> PoolerDeployPlan:
    """The deploy and scaling plan, checked: a stopping task finishes its transactions in time."""
    pb = settings.pooler.pgbouncer
    drain = pb.stop_timeout_s - DRAIN_MARGIN_S
    role_idle_tx_s = longest_idle_in_transaction_s(settings)
    # A transaction ends by its function's timeout (the instance is then stopped and its
    # connection closed) or, for a frozen instance, by the role's idle-in-transaction timeout.
    longest_fn = max(settings.functions.items(), key=lambda item: item[1].timeout_s)
    longest = max(longest_fn[1].timeout_s, role_idle_tx_s)
    if drain < longest:
        out.append(
            Violation(
                "pooler.pgbouncer.stop_timeout_s",
                f"a stopping task's safe shutdown of {drain} s (stop_timeout_s "
                f"{pb.stop_timeout_s} - {DRAIN_MARGIN_S}) is shorter than the longest transaction "
                f"a client may hold, {longest} s (function {longest_fn[0]} timeout "
                f"{longest_fn[1].timeout_s} s, idle in transaction {role_idle_tx_s} s): ECS "
                f"would kill it mid-transaction; raise stop_timeout_s (Fargate allows at most "
                f"{FARGATE_STOP_TIMEOUT_MAX_S}) or shorten the functions' timeout_s",
            )
        )
    fixed_percent, _ = deployment_percents(pb.tasks, pb.deploy_surge_tasks)
    fixed_processes = peak_tasks(pb.tasks, fixed_percent) * pb.processes_per_task
    pool_if_fixed = ceiling // fixed_processes - pb.reserve_pool if fixed_processes else 0
    # One batch: new tasks start and pass the health check, then the old ones leave the NLB
    # and drain. With no surge the old task goes first and its replacement starts after.
    start_s = NLB_HEALTH_INTERVAL_S * NLB_HEALTHY_THRESHOLD
    task_stop = pb.deregistration_delay_s + pb.stop_timeout_s
    batches = math.ceil(pb.scaling_maximum / max(pb.deploy_surge_tasks, 1))
    return PoolerDeployPlan(
        min_tasks=pb.tasks,
        max_tasks=pb.scaling_maximum,
        surge_tasks=pb.deploy_surge_tasks,
        maximum_percent=max_percent,
        minimum_healthy_percent=min_healthy,
        peak_tasks=peak,
        server_connections_min=pb.tasks * per_task,
        server_connections_max=pb.scaling_maximum * per_task,
        server_connections_peak=peak * per_task,
        pool_size_if_fixed=pool_if_fixed,
        cpu_target_percent=pb.cpu_target_percent,
        stop_timeout_s=pb.stop_timeout_s,
        drain_timeout_s=drain,
        deregistration_delay_s=pb.deregistration_delay_s,
        longest_transaction_s=longest,
        task_stop_worst_s=task_stop,
        deploy_worst_s=batches * (start_s + task_stop),
    )


def _rds_proxy(
    settings: StackSettings,
    max_connections: int,
    ceiling: int,
    ceiling_text: str,
    out: list[Violation],
) -> RdsProxyBudget:
    rp = settings.pooler.rds_proxy
    if rp.max_connections_percent is None:
        percent = ceiling * 100 // max_connections if max_connections else 0
        if percent < 1:
            out.append(
                Violation(
                    "pooler.rds_proxy.max_connections_percent",
                    f"the {ceiling_text} is under 1% of max_connections {max_connections}",
                )
            )
            percent = 1
    else:
        percent = rp.max_connections_percent
    proxy_connections = max_connections * percent // 100
    if proxy_connections > ceiling:
        out.append(
            Violation(
                "pooler.rds_proxy.max_connections_percent",
                f"RDS Proxy connections max_connections {max_connections} x {percent}% = "
                f"{proxy_connections} exceed the {ceiling_text}",
            )
        )
    idle_percent = (
        rp.max_idle_connections_percent
        if rp.max_idle_connections_percent is not None
        else percent // 2
    )
    if idle_percent > percent:
        out.append(
            Violation(
                "pooler.rds_proxy.max_idle_connections_percent",
                f"MaxIdleConnectionsPercent {idle_percent} must not exceed "
                f"MaxConnectionsPercent {percent}",
            )
        )
    if rp.idle_client_timeout_s >= NLB_IDLE_TIMEOUT_S:
        out.append(
            Violation(
                "pooler.rds_proxy.idle_client_timeout_s",
                f"IdleClientTimeout {rp.idle_client_timeout_s} s keeps frozen instances' "
                f"connections too long; keep it below {NLB_IDLE_TIMEOUT_S} s",
            )
        )
    return RdsProxyBudget(
        max_connections_percent=percent,
        max_idle_connections_percent=idle_percent,
        proxy_connections=proxy_connections,
        connection_borrow_timeout_s=rp.connection_borrow_timeout_s,
        idle_client_timeout_s=rp.idle_client_timeout_s,
        iam_auth=rp.iam_auth,
    )


def _functions(
    settings: StackSettings,
    queue_wait_s: int,
    queue_setting: str,
    reap_s: int,
    out: list[Violation],
) -> dict[str, FunctionBudget]:
    result: dict[str, FunctionBudget] = {}
    for name, fn in sorted(settings.functions.items()):
        path = f"functions.{name}"
        statement_ms, statement_setting = statement_timeout(settings, name)
        statement_s = statement_ms / 1000
        worst_connect = fn.connect_timeout_s + fn.retry_budget_s + ANSWER_RESERVE_S
        if worst_connect >= fn.timeout_s:
            out.append(
                Violation(
                    f"{path}.retry_budget_s",
                    f"connect timeout {fn.connect_timeout_s} s + retry budget "
                    f"{fn.retry_budget_s:g} s + {ANSWER_RESERVE_S:g} s to answer = "
                    f"{worst_connect:g} s must be below the function timeout {fn.timeout_s} s",
                )
            )
        worst_query = queue_wait_s + statement_s + ANSWER_RESERVE_S
        if statement_s + ANSWER_RESERVE_S >= fn.timeout_s:
            out.append(
                Violation(
                    statement_setting,
                    f"statement_timeout {statement_s:g} s + {ANSWER_RESERVE_S:g} s to answer "
                    f"must be below {path}.timeout_s {fn.timeout_s} s",
                )
            )
        elif worst_query >= fn.timeout_s:
            out.append(
                Violation(
                    queue_setting,
                    f"pooler queue wait {queue_wait_s} s + statement_timeout {statement_s:g} s + "
                    f"{ANSWER_RESERVE_S:g} s to answer = {worst_query:g} s must be below "
                    f"{path}.timeout_s {fn.timeout_s} s",
                )
            )
        result[name] = FunctionBudget(
            name=name,
            timeout_s=fn.timeout_s,
            reserved_concurrency=fn.reserved_concurrency,
            connect_timeout_s=fn.connect_timeout_s,
            retry_budget_s=fn.retry_budget_s,
            # Discard a kept connection before the pooler reaps it, so a thawed instance never
            # writes into a socket the pooler has already closed.
            idle_discard_s=max(1, reap_s * 4 // 5),
            queue_wait_s=queue_wait_s,
            worst_connect_s=worst_connect,
            worst_query_s=worst_query,
            workload=workload_of(settings, name),
        )
    return result


def _pooler_limit(
    settings: StackSettings, m: int, ceiling: int, ceiling_text: str, out: list[Violation]
) -> tuple[int, str]:
    """The most the pooler may hold: the ceiling, lowered to stay under the warning alarm.

    An alarm that fires in healthy operation teaches people to ignore it: the pooler's planned
    peak plus the observers' connections must stay below `db-connections-warn`.
    """
    al = settings.alarms
    warn = math.ceil(m * al.warn_percent / 100)
    room = warn - al.observer_connections - 1
    if not m or room >= ceiling:
        return ceiling, ceiling_text
    if room < 2:
        out.append(
            Violation(
                "alarms.warn_percent",
                f"the warning alarm at {al.warn_percent}% of max_connections {m} = {warn} "
                f"connections leaves the pooler {room} ({warn} - {al.observer_connections} "
                "observer_connections - 1) below it: every healthy burst would raise "
                "db-connections-warn; raise alarms.warn_percent or database.max_connections, or "
                "lower alarms.observer_connections",
            )
        )
        return max(room, 0), f"{max(room, 0)} the pooler may hold below the warning alarm"
    return room, (
        f"{room} the pooler may hold below the warning alarm (warn_percent "
        f"{al.warn_percent}% of {m} = {warn} - {al.observer_connections} observer_connections "
        f"- 1; the ceiling is {ceiling}); raise alarms.warn_percent or database.max_connections "
        "for more"
    )


def _workloads(
    settings: StackSettings,
    pgbouncer: PgBouncerBudget | None,
    *,
    server_total: int,
    ceiling: int,
    out: list[Violation],
    warnings: list[str],
) -> tuple[dict[str, WorkloadBudget], int]:
    """The workloads' split of the pooler (infra/workloads.py) and app_user's connection limit."""
    if pgbouncer is not None:
        shape = PoolShape(
            "pgbouncer",
            pgbouncer.pool_size,
            pgbouncer.reserve_pool,
            pgbouncer.deploy.peak_tasks * pgbouncer.processes_per_task,
        )
    else:
        shape = PoolShape("rds-proxy", server_total, 0, 1)
    problems: list[tuple[str, str]] = []
    result = compute_workloads(settings, shape, ceiling, problems, warnings)
    out.extend(Violation(setting, message) for setting, message in problems)
    return result


def compute_budget(settings: StackSettings) -> Budget:
    """Derive every number of the stack, or raise `BudgetError` listing every broken invariant."""
    out: list[Violation] = []
    m, m_source = _max_connections(settings, out)
    db = settings.database
    # RDS keeps superuser_reserved_connections and rds.rds_superuser_reserved_connections (and
    # PostgreSQL 16's reserved_connections) from ordinary roles: the pooler's role is one.
    ceiling = m - db.reserved_total - db.admin_margin
    ceiling_text = (
        f"{ceiling} the database can give the pooler (max_connections {m} - "
        f"{reserved_text(settings)} - {db.admin_margin} admin)"
    )
    if m and ceiling < 2:
        out.append(
            Violation(
                "database.admin_margin",
                f"max_connections {m} - {reserved_text(settings)} - "
                f"{db.admin_margin} admin = {ceiling} leaves the pooler fewer than 2 connections",
            )
        )
    limit, limit_text = _pooler_limit(settings, m, ceiling, ceiling_text, out)
    pgbouncer: PgBouncerBudget | None = None
    rds_proxy: RdsProxyBudget | None = None
    if settings.pooler.kind == "pgbouncer":
        pgbouncer = _pgbouncer(settings, limit, limit_text, out)
        server_total = pgbouncer.server_connections_total
        planned_max = pgbouncer.deploy.server_connections_peak
        queue_wait, queue_setting = (
            pgbouncer.query_wait_timeout_s,
            "pooler.pgbouncer.query_wait_timeout_s",
        )
        reap = pgbouncer.client_idle_timeout_s
        port = pgbouncer.port
    else:
        rds_proxy = _rds_proxy(settings, m, limit, limit_text, out)
        server_total = rds_proxy.proxy_connections
        planned_max = server_total
        queue_wait, queue_setting = (
            rds_proxy.connection_borrow_timeout_s,
            "pooler.rds_proxy.connection_borrow_timeout_s",
        )
        reap = rds_proxy.idle_client_timeout_s
        port = rds_proxy.port
    functions = _functions(settings, queue_wait, queue_setting, reap, out)
    demand, demand_text = client_demand(settings)
    warnings: list[str] = []
    workloads, app_user_limit = _workloads(
        settings, pgbouncer, server_total=server_total, ceiling=ceiling, out=out, warnings=warnings
    )
    if pgbouncer is not None:
        pgbouncer = _pgbouncer_prepared(settings, pgbouncer, out)
        pgbouncer = _pgbouncer_logins(settings, pgbouncer, functions, warnings)

    out += _lambda_quota(settings)

    au = settings.app_user
    app_user = AppUserBudget(
        name=au.name,
        migration_role=au.migration_role,
        schema_name=au.schema_name,
        connection_limit=app_user_limit,
        statement_timeout_ms=au.statement_timeout_ms,
        idle_in_transaction_session_timeout_ms=au.idle_in_transaction_session_timeout_ms,
        lock_timeout_ms=au.lock_timeout_ms,
    )
    if au.name == au.migration_role:
        out.append(Violation("app_user.migration_role", "must differ from app_user.name"))

    alarms_settings = settings.alarms
    warn = math.ceil(m * alarms_settings.warn_percent / 100)
    critical = math.ceil(m * alarms_settings.critical_percent / 100)
    usable_slots = m - db.reserved_total
    if m and critical > usable_slots:
        out.append(
            Violation(
                "alarms.critical_percent",
                f"critical threshold {alarms_settings.critical_percent}% of {m} = {critical} "
                f"connections is above the {usable_slots} slots ordinary roles get "
                f"(max_connections {m} - {reserved_text(settings)}): it would fire only after "
                "clients are already refused",
            )
        )
    # What the pooler may hold at its planned peak (a deploy's surge included) is normal.
    bypass = planned_max + db.admin_margin
    alarms = AlarmThresholds(
        period_s=alarms_settings.period_s,
        evaluation_periods=alarms_settings.evaluation_periods,
        db_connections_warn=warn,
        db_connections_critical=critical,
        db_connections_bypass=bypass,
        pooler_waiting_clients=max(server_total, 1) if pgbouncer is not None else None,
        pooler_oldest_wait_s=queue_wait / 2 if pgbouncer is not None else None,
        pooler_client_connections=(
            pgbouncer.client_capacity * 80 // 100 if pgbouncer is not None else None
        ),
        proxy_pinned_connections=(
            max(1, rds_proxy.proxy_connections // 5) if rds_proxy is not None else None
        ),
        proxy_borrow_latency_us=(
            rds_proxy.connection_borrow_timeout_s * 1_000_000 // 2
            if rds_proxy is not None
            else None
        ),
    )
    reads, pause, failover = _cluster_parts(
        settings,
        m=m,
        limit=limit,
        pgbouncer=pgbouncer,
        rds_proxy=rds_proxy,
        functions=functions,
        warnings=warnings,
        out=out,
    )
    if out:
        raise BudgetError(out)

    budget = Budget(
        stack=settings.stack,
        max_connections=m,
        max_connections_source=m_source,
        reserved_connections=db.reserved_total,
        admin_margin=db.admin_margin,
        pooler_ceiling=ceiling,
        pooler_kind=settings.pooler.kind,
        pooler_server_connections=server_total,
        pooler_port=port,
        pooler_planned_max=planned_max,
        pooler_limit=limit,
        observer_connections=settings.alarms.observer_connections,
        # A database-wide safety net for every other role (humans with psql included).
        database_idle_in_transaction_ms=max(au.idle_in_transaction_session_timeout_ms, 60_000),
        pgbouncer=pgbouncer,
        rds_proxy=rds_proxy,
        app_user=app_user,
        functions=functions,
        alarms=alarms,
        figures=(),
        warnings=tuple(warnings),
        workloads=workloads,
        client_demand=demand,
        client_demand_text=demand_text,
        database_kind=db.kind,
        read_pool=reads,
        failover=failover,
        auto_pause=pause,
        serverless_acu=(db.aurora.min_capacity_acu, db.aurora.max_capacity_acu)
        if db.kind == "aurora" and db.aurora.serverless
        else None,
    )
    return _with_workload_figures(_with_figures(budget, settings))


def _with_workload_figures(budget: Budget) -> Budget:
    """Each workload's pool and limit, with the split's arithmetic (none without workloads)."""
    figures: list[Figure] = list(budget.figures)
    pb = budget.pgbouncer
    for w in budget.workloads.values():
        if pb is not None and w.pool_size is not None:
            figures.append(
                Figure(
                    f"workloads.{w.name}.pool_size",
                    w.pool_size,
                    "connections/process",
                    f"{w.share_percent}% of the pool {pb.pool_size}, rounded down "
                    f"(role {w.role}, [users] pool_size)",
                )
            )
        figures.append(
            Figure(
                f"workloads.{w.name}.connection_limit",
                w.connection_limit,
                "connections",
                f"{pb.deploy.peak_tasks * pb.processes_per_task} processes at the peak x "
                f"({w.pool_size} pool + {pb.reserve_pool} reserve)"
                if pb is not None
                else f"{w.share_percent}% of the proxy's {budget.pooler_server_connections}",
            )
        )
        figures.append(
            Figure(f"workloads.{w.name}.statement_timeout", w.statement_timeout_ms, "ms", "setting")
        )
    if pb is not None and budget.workloads:
        figures.append(
            Figure(
                "workloads.default.pool_size",
                budget.default_pool_size or 0,
                "connections/process",
                f"the pool {pb.pool_size} less the workloads' pools (app_user's default_pool_size)",
            )
        )
    return replace(budget, figures=tuple(figures))


def _lambda_quota(settings: StackSettings) -> list[Violation]:
    """Reservations must leave Lambda its 100 unreserved; no reservation needs no room."""
    fns = sorted(settings.functions.items())
    total = reserved_total([f.reserved_concurrency for _, f in fns])
    reservable = settings.lambda_concurrency_quota - LAMBDA_UNRESERVED_MINIMUM
    if total == 0 or total <= reservable:
        return []
    parts = " + ".join(
        f"{name} {f.reserved_concurrency}" for name, f in fns if f.reserved_concurrency is not None
    )
    return [
        Violation(
            "lambda_concurrency_quota",
            f"reserved concurrency {parts} + bootstrap {BOOTSTRAP_RESERVED_CONCURRENCY} = "
            f"{total} exceeds the account quota {settings.lambda_concurrency_quota} "
            f"- {LAMBDA_UNRESERVED_MINIMUM} that Lambda keeps unreserved = {max(reservable, 0)}; "
            "request a higher quota in Service Quotas and set it here, reserve less, or leave "
            "functions unreserved (functions.<name>.reserved_concurrency: null)",
        )
    ]


def _cluster_parts(
    settings: StackSettings,
    *,
    m: int,
    limit: int,
    pgbouncer: PgBouncerBudget | None,
    rds_proxy: RdsProxyBudget | None,
    functions: dict[str, FunctionBudget],
    warnings: list[str],
    out: list[Violation],
) -> tuple[ReadPoolBudget | None, AutoPausePlan | None, FailoverPlan | None]:
    """Aurora's read pool, auto-pause and failover plans (None for the other kinds)."""
    db = settings.database
    cluster_out: list[tuple[str, str]] = []
    windows = {f.name: f.connect_timeout_s + f.retry_budget_s for f in functions.values()}
    reads = read_pool(
        settings,
        max_connections=m,
        limit=limit,
        peak_processes=(
            pgbouncer.deploy.peak_tasks * pgbouncer.processes_per_task if pgbouncer else None
        ),
        reserve_pool=pgbouncer.reserve_pool if pgbouncer else 0,
        out=cluster_out,
    )
    if reads is not None and rds_proxy is not None:
        reads = replace(reads, database_alias=db.name)
    if reads is not None and pgbouncer is not None:
        # A handler may hold a write and a read connection at once: two clients per instance.
        instances, instances_text = client_demand(settings)
        demand = 2 * instances
        if demand > pgbouncer.usable_client_capacity:
            cluster_out.append(
                (
                    "pooler.pgbouncer.max_client_conn",
                    f"with a read path every function instance may hold two client "
                    f"connections: 2 x ({instances_text}) = {demand} exceeds the pooler's "
                    f"usable client capacity {pgbouncer.usable_client_capacity}",
                )
            )
    pooler_waits = (
        {
            "pooler.pgbouncer.query_wait_timeout_s": pgbouncer.query_wait_timeout_s,
            "pooler.pgbouncer.server_connect_timeout_s": pgbouncer.server_connect_timeout_s,
        }
        if pgbouncer is not None
        else {}
    )
    pause = auto_pause_plan(
        settings,
        server_idle_timeout_s=pgbouncer.server_idle_timeout_s if pgbouncer else None,
        pooler_waits=pooler_waits,
        out=cluster_out,
        warnings=warnings,
    )
    failover = failover_plan(settings, windows, warnings)
    out += [Violation(setting, message) for setting, message in cluster_out]
    return reads, pause, failover


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _pgbouncer_prepared(
    settings: StackSettings, pb: PgBouncerBudget, out: list[Violation]
) -> PgBouncerBudget:
    """`max_prepared_statements`: the setting, else 200 from PgBouncer 1.21 and 0 before."""
    wanted = settings.pooler.pgbouncer.max_prepared_statements
    supported = _version(pb.version) >= PREPARED_STATEMENTS_SINCE
    if wanted is None:
        wanted = DEFAULT_MAX_PREPARED_STATEMENTS if supported else 0
    elif wanted > 0 and not supported:
        out.append(
            Violation(
                "pooler.pgbouncer.max_prepared_statements",
                f"{wanted} needs PgBouncer 1.21+ (pooler.pgbouncer.version is {pb.version}); "
                "set it to 0 or pin a newer release",
            )
        )
    return replace(pb, max_prepared_statements=wanted)


def _pgbouncer_logins(
    settings: StackSettings,
    pb: PgBouncerBudget,
    functions: dict[str, FunctionBudget],
    warnings: list[str],
) -> PgBouncerBudget:
    """The largest cold burst (every reserved instance at once) against the pooler's login rate.

    A warning, not a violation: a function whose connect window (connect timeout + retry
    budget) is shorter than the admission time may fail to log in during that burst.
    """
    burst, _ = client_demand(settings)
    ps = settings.pooler.pgbouncer
    result = admission(
        burst, tasks=pb.tasks, processes_per_task=pb.processes_per_task, task_cpu_units=ps.cpu
    )
    for fn in functions.values():
        window = fn.connect_timeout_s + fn.retry_budget_s
        if result.seconds > window:
            warnings.append(
                f"functions.{fn.name}: a cold burst takes {result.arithmetic()} to log in at "
                f"{ps.cpu} CPU units per task ({result.vcpu_per_process:g} vCPU per process), "
                f"longer than its connect timeout {fn.connect_timeout_s} s + retry budget "
                f"{fn.retry_budget_s:g} s = {window:g} s: raise pooler.pgbouncer.cpu or "
                f"pooler.pgbouncer.tasks, or functions.{fn.name}.retry_budget_s"
            )
    return replace(
        pb,
        login_rate_per_process=result.logins_per_second_per_process,
        cold_burst_clients=burst,
        cold_burst_admission_s=result.seconds,
    )


def _with_figures(budget: Budget, settings: StackSettings) -> Budget:
    m, ceiling = budget.max_connections, budget.pooler_ceiling
    db = settings.database
    figs: list[Figure] = [
        Figure("database.max_connections", m, "connections", budget.max_connections_source),
        Figure(
            "database.reserved_connections",
            budget.reserved_connections,
            "connections",
            reserved_text(settings),
        ),
        Figure(
            "database.usable_slots",
            m - budget.reserved_connections,
            "connections",
            f"slots ordinary roles get: {m} - {budget.reserved_connections} reserved",
        ),
        Figure("database.admin_margin", db.admin_margin, "connections", "admin margin setting"),
        Figure(
            "pooler.ceiling",
            ceiling,
            "connections",
            f"{m} - {budget.reserved_connections} reserved - {db.admin_margin} admin",
        ),
    ]
    pb, rp = budget.pgbouncer, budget.rds_proxy
    if pb is not None:
        shape = f"{pb.tasks} tasks x {pb.processes_per_task} processes"
        figs += [
            Figure(
                "pgbouncer.pool_size",
                pb.pool_size,
                "connections/process",
                "setting"
                if settings.pooler.pgbouncer.pool_size is not None
                else f"{ceiling} // {pb.processes} processes - {pb.reserve_pool} reserve",
            ),
            Figure(
                "pgbouncer.max_db_connections",
                pb.max_db_connections,
                "connections/process",
                f"{pb.pool_size} pool + {pb.reserve_pool} reserve",
            ),
            Figure(
                "pgbouncer.server_connections",
                pb.server_connections_total,
                "connections",
                f"{shape} x {pb.max_db_connections}",
                ceiling,
                "pooler ceiling",
            ),
            Figure(
                "pgbouncer.client_capacity",
                pb.usable_client_capacity,
                "clients",
                f"{shape} x {pb.max_client_conn} less "
                f"{settings.pooler.pgbouncer.client_headroom_percent}% headroom",
            ),
            Figure(
                "pgbouncer.listen_backlog",
                pb.listen_backlog,
                "connections",
                f"min(max_client_conn, {SOMAXCONN})",
            ),
            Figure(
                "pgbouncer.file_descriptors",
                pb.file_descriptors,
                "fds/process",
                f"{pb.max_client_conn} clients + {pb.max_db_connections} servers + "
                f"{PGBOUNCER_FD_MARGIN}",
            ),
            Figure(
                "pgbouncer.query_wait_timeout",
                pb.query_wait_timeout_s,
                "s",
                "setting",
                min(f.timeout_s for f in budget.functions.values()),
                "shortest function timeout",
            ),
            Figure(
                "pgbouncer.client_idle_timeout",
                pb.client_idle_timeout_s,
                "s",
                "setting",
                NLB_IDLE_TIMEOUT_S,
                "NLB idle timeout",
            ),
            Figure(
                "pgbouncer.idle_transaction_timeout",
                pb.idle_transaction_timeout_s,
                "s",
                "role's idle-in-transaction timeout + 5 s",
            ),
        ]
    if rp is not None:
        figs += [
            Figure(
                "rds_proxy.max_connections_percent",
                rp.max_connections_percent,
                "%",
                "setting"
                if settings.pooler.rds_proxy.max_connections_percent is not None
                else f"{ceiling} x 100 // {m}",
            ),
            Figure(
                "rds_proxy.connections",
                rp.proxy_connections,
                "connections",
                f"{m} x {rp.max_connections_percent}%",
                ceiling,
                "pooler ceiling",
            ),
            Figure(
                "rds_proxy.max_idle_connections_percent",
                rp.max_idle_connections_percent,
                "%",
                "setting or half the connections percentage",
                rp.max_connections_percent,
                "MaxConnectionsPercent",
            ),
            Figure(
                "rds_proxy.connection_borrow_timeout",
                rp.connection_borrow_timeout_s,
                "s",
                "setting",
                min(f.timeout_s for f in budget.functions.values()),
                "shortest function timeout",
            ),
            Figure(
                "rds_proxy.idle_client_timeout",
                rp.idle_client_timeout_s,
                "s",
                "setting",
                NLB_IDLE_TIMEOUT_S,
                "frozen-instance reaping limit",
            ),
        ]
    au = budget.app_user
    figs += [
        Figure(
            "app_user.connection_limit",
            au.connection_limit,
            "connections",
            "pooler ceiling"
            if not budget.workloads
            else "pooler ceiling less the workloads' pools",
            m - budget.reserved_connections,
            "slots ordinary roles get",
        ),
        Figure("app_user.statement_timeout", au.statement_timeout_ms, "ms", "setting"),
        Figure(
            "app_user.idle_in_transaction_session_timeout",
            au.idle_in_transaction_session_timeout_ms,
            "ms",
            "setting",
        ),
        Figure("app_user.lock_timeout", au.lock_timeout_ms, "ms", "setting"),
        Figure(
            "database.idle_in_transaction_session_timeout",
            budget.database_idle_in_transaction_ms,
            "ms",
            "max(role's, 60 s)",
        ),
    ]
    figs.append(
        Figure(
            "functions.reserved_concurrency",
            budget.client_demand,
            "instances",
            budget.client_demand_text,
            pb.usable_client_capacity if pb is not None else None,
            "pooler client capacity" if pb is not None else "",
        )
    )
    bootstrap = budget.bootstrap_reserved_concurrency or 0
    figs.append(
        Figure(
            "lambda.reserved_concurrency_total",
            budget.reserved_concurrency_total,
            "instances",
            f"functions {budget.reserved_concurrency_total - bootstrap} + bootstrap {bootstrap}",
            max(settings.lambda_concurrency_quota - LAMBDA_UNRESERVED_MINIMUM, 0),
            f"account quota {settings.lambda_concurrency_quota} - "
            f"{LAMBDA_UNRESERVED_MINIMUM} unreserved",
        )
    )
    for fn in budget.functions.values():
        figs += [
            Figure(
                f"functions.{fn.name}.worst_connect",
                fn.worst_connect_s,
                "s",
                f"connect {fn.connect_timeout_s} + retries {fn.retry_budget_s:g} + answer "
                f"{ANSWER_RESERVE_S:g}",
                fn.timeout_s,
                "function timeout",
            ),
            Figure(
                f"functions.{fn.name}.worst_query",
                fn.worst_query_s,
                "s",
                f"queue {fn.queue_wait_s} + statement {au.statement_timeout_ms / 1000:g} + "
                f"answer {ANSWER_RESERVE_S:g}",
                fn.timeout_s,
                "function timeout",
            ),
            Figure(
                f"functions.{fn.name}.idle_discard",
                fn.idle_discard_s,
                "s",
                "4/5 of the pooler's client idle reaping",
            ),
        ]
    figs += _operations_figures(budget)
    al = budget.alarms
    figs += [
        Figure(
            "alarms.db_connections_warn",
            al.db_connections_warn,
            "connections",
            f"{settings.alarms.warn_percent}% of {m}",
            m,
            "max_connections",
        ),
        Figure(
            "alarms.db_connections_critical",
            al.db_connections_critical,
            "connections",
            f"{settings.alarms.critical_percent}% of {m}",
            m - budget.reserved_connections,
            "slots ordinary roles get",
        ),
        Figure(
            "alarms.db_connections_bypass",
            al.db_connections_bypass,
            "connections",
            f"pooler's planned peak {budget.pooler_planned_max} + admin {db.admin_margin}",
        ),
        Figure(
            "alarms.healthy_peak",
            budget.pooler_planned_max + budget.observer_connections,
            "connections",
            f"pooler's planned peak {budget.pooler_planned_max} + "
            f"{budget.observer_connections} observers",
            al.db_connections_warn - 1,
            "below the warning alarm",
        ),
    ]
    if al.pooler_waiting_clients is not None and al.pooler_oldest_wait_s is not None:
        figs += [
            Figure(
                "alarms.pooler_waiting_clients",
                al.pooler_waiting_clients,
                "clients",
                "pooler server connections",
            ),
            Figure(
                "alarms.pooler_oldest_wait", al.pooler_oldest_wait_s, "s", "half the queue wait"
            ),
        ]
    if al.pooler_client_connections is not None:
        figs.append(
            Figure(
                "alarms.pooler_client_connections",
                al.pooler_client_connections,
                "clients",
                "80% of client capacity",
            )
        )
    if al.proxy_pinned_connections is not None:
        figs.append(
            Figure(
                "alarms.proxy_pinned_connections",
                al.proxy_pinned_connections,
                "connections",
                "20% of proxy connections",
            )
        )
    if al.proxy_borrow_latency_us is not None:
        figs.append(
            Figure(
                "alarms.proxy_borrow_latency",
                al.proxy_borrow_latency_us,
                "us",
                "half the borrow timeout",
            )
        )
    figs += _pgbouncer_extra_figures(budget)
    figs += _cluster_figures(budget)
    return replace(budget, figures=tuple(figs))


def _cluster_figures(budget: Budget) -> list[Figure]:
    """The read pool, the failover plan and the auto-pause plan (Aurora stacks only)."""
    figs: list[Figure] = []
    rp, fo, ap = budget.read_pool, budget.failover, budget.auto_pause
    if rp is not None:
        figs += [
            Figure(
                "read_pool.reader_max_connections",
                rp.reader_max_connections,
                "connections/reader",
                "each reader has the writer's class and capacity range",
            ),
            Figure(
                "read_pool.server_connections_peak",
                rp.server_connections_peak,
                "connections",
                "budgeted against ONE reader: the reader endpoint's DNS may send every read "
                "connection to the same reader",
                budget.pooler_limit,
                "one reader's pooler limit",
            ),
        ]
    if fo is not None:
        figs += [
            Figure(
                "failover.write_outage",
                fo.write_outage_s,
                "s",
                "database.aurora.failover_write_outage_s",
            ),
            Figure(
                "failover.pgbouncer_dns_max_ttl",
                fo.dns_max_ttl_s,
                "s",
                "Aurora endpoints' DNS TTL: the pooler re-resolves the writer this soon",
            ),
        ]
        figs += [
            Figure(
                f"failover.functions.{name}.rides_through",
                1 if ok else 0,
                "yes/no",
                "connect timeout + retry budget >= write outage (else a clear error)",
            )
            for name, ok in sorted(fo.rides_through.items())
        ]
    if ap is not None:
        figs += [
            Figure(
                "auto_pause.server_idle_timeout",
                ap.server_idle_timeout_s,
                "s",
                "pooler's idle server connections close after this",
                ap.seconds_until_auto_pause,
                "seconds_until_auto_pause (else the cluster never pauses)",
            ),
            Figure("auto_pause.resume", ap.resume_s, "s", "a paused instance's resume"),
        ]
    return figs


def _operations_figures(budget: Budget) -> list[Figure]:
    """The deploy and scaling plan: what `slotguard budget` shows under `pgbouncer.deploy.*`."""
    figs = [
        Figure(
            "pooler.limit",
            budget.pooler_limit,
            "connections",
            "pooler ceiling"
            if budget.pooler_limit == budget.pooler_ceiling
            else f"warning alarm {budget.alarms.db_connections_warn} - "
            f"{budget.observer_connections} observers - 1",
            budget.pooler_ceiling,
            "pooler ceiling",
        )
    ]
    pb = budget.pgbouncer
    if pb is None:
        return figs
    d = pb.deploy
    ppt = pb.processes_per_task
    figs += [
        Figure(
            "pgbouncer.deploy.maximum_percent",
            d.maximum_percent,
            "%",
            f"{d.min_tasks} tasks + {d.surge_tasks} surge"
            if d.surge_tasks
            else "no surge: one task stopped first",
        ),
        Figure(
            "pgbouncer.deploy.minimum_healthy_percent",
            d.minimum_healthy_percent,
            "%",
            "no task stopped before its replacement is healthy"
            if d.surge_tasks
            else f"{d.min_tasks - 1} of {d.min_tasks} tasks serve during a deploy",
        ),
        Figure(
            "pgbouncer.deploy.peak_tasks",
            d.peak_tasks,
            "tasks",
            f"{d.max_tasks} max_tasks x {d.maximum_percent}% rounded down",
        ),
        Figure(
            "pgbouncer.server_connections_at_max_tasks",
            d.server_connections_max,
            "connections",
            f"{d.max_tasks} tasks x {ppt} processes x {pb.max_db_connections}",
            budget.pooler_limit,
            "pooler limit",
        ),
        Figure(
            "pgbouncer.server_connections_peak",
            d.server_connections_peak,
            "connections",
            f"{d.peak_tasks} tasks x {ppt} processes x {pb.max_db_connections}",
            budget.pooler_limit,
            "pooler limit",
        ),
        Figure(
            "pgbouncer.pool_size_if_fixed",
            d.pool_size_if_fixed,
            "connections/process",
            f"the pool if max_tasks were {d.min_tasks} (the price of scaling to {d.max_tasks}: "
            f"{pb.pool_size} now)",
        ),
        Figure(
            "pgbouncer.scaling.cpu_target",
            d.cpu_target_percent if d.scales else 0,
            "%",
            f"target tracking between {d.min_tasks} and {d.max_tasks} tasks"
            if d.scales
            else "no scaling: max_tasks = tasks",
        ),
        Figure(
            "pgbouncer.deploy.longest_transaction",
            d.longest_transaction_s,
            "s",
            "longest function timeout or idle-in-transaction timeout",
            d.drain_timeout_s,
            f"safe shutdown: stop_timeout {d.stop_timeout_s} - {DRAIN_MARGIN_S}",
        ),
        Figure(
            "pgbouncer.deploy.stop_timeout",
            d.stop_timeout_s,
            "s",
            "setting",
            FARGATE_STOP_TIMEOUT_MAX_S,
            "Fargate's stopTimeout maximum",
        ),
        Figure(
            "pgbouncer.deploy.deregistration_delay",
            d.deregistration_delay_s,
            "s",
            "setting: the NLB sends a stopping task no new connections",
        ),
        Figure(
            "pgbouncer.deploy.task_stop_worst",
            d.task_stop_worst_s,
            "s",
            f"deregistration {d.deregistration_delay_s} + stop timeout {d.stop_timeout_s}",
        ),
        Figure(
            "pgbouncer.deploy.duration_worst",
            d.deploy_worst_s,
            "s",
            f"{math.ceil(d.max_tasks / max(d.surge_tasks, 1))} batches x (healthy "
            f"{NLB_HEALTH_INTERVAL_S * NLB_HEALTHY_THRESHOLD} + {d.task_stop_worst_s})",
        ),
    ]
    return figs


def _pgbouncer_extra_figures(budget: Budget) -> list[Figure]:
    """Prepared statements and the cold burst's login time (PgBouncer stacks only)."""
    pb = budget.pgbouncer
    if pb is None:
        return []
    window = min(f.connect_timeout_s + f.retry_budget_s for f in budget.functions.values())
    return [
        Figure(
            "pgbouncer.max_prepared_statements",
            pb.max_prepared_statements,
            "statements/server connection",
            "setting or 200 from PgBouncer 1.21 (0 before)",
        ),
        Figure(
            "pgbouncer.login_rate",
            round(pb.login_rate_per_process, 1),
            "logins/s/process",
            "measured logins per CPU-second x the process's vCPU share",
        ),
        Figure(
            "pgbouncer.cold_burst_admission",
            round(pb.cold_burst_admission_s, 2),
            "s",
            f"{pb.cold_burst_clients} instances / ({pb.processes} processes x "
            f"{pb.login_rate_per_process:.0f} logins/s); shortest connect timeout + retry "
            f"budget {window:g} s (a warning when longer, not a limit)",
        ),
    ]
