"""The connection budget: every number that decides whether a burst is survived, derived once.

Pure and typed (no Pulumi, no I/O). The Pulumi program, the PgBouncer configuration, the
`app_user` role, the functions' environment, the alarms, the policy pack and the local target all
*render* this budget; none of them invents a number of its own. `compute_budget` refuses settings
whose numbers do not add up, naming the setting and showing the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from infra.settings import StackSettings

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
    port: int = PGBOUNCER_PORT


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
    reserved_concurrency: int
    connect_timeout_s: int
    retry_budget_s: float
    idle_discard_s: int
    queue_wait_s: int
    worst_connect_s: float
    worst_query_s: float


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
    database_idle_in_transaction_ms: int
    pgbouncer: PgBouncerBudget | None
    rds_proxy: RdsProxyBudget | None
    app_user: AppUserBudget
    functions: dict[str, FunctionBudget]
    alarms: AlarmThresholds
    figures: tuple[Figure, ...] = field(repr=False)

    @property
    def reserved_concurrency_total(self) -> int:
        """Every reservation the stack makes on the account: its functions' plus the bootstrap's."""
        return (
            sum(f.reserved_concurrency for f in self.functions.values())
            + BOOTSTRAP_RESERVED_CONCURRENCY
        )

    def function_environment(self, name: str) -> dict[str, str]:
        """The numbers a function reads from its environment (host and secret come from infra)."""
        fn = self.functions[name]
        return {
            "DB_PORT": str(self.pooler_port),
            "DB_USER": self.app_user.name,
            "DB_SSLMODE": "verify-full",
            "DB_CONNECT_TIMEOUT_S": str(fn.connect_timeout_s),
            "DB_IDLE_DISCARD_S": str(fn.idle_discard_s),
            "DB_RETRY_BUDGET_S": f"{fn.retry_budget_s:g}",
            "DB_RETRIES": "on",
        }

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
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["figures"] = [{**asdict(f), "headroom": f.headroom} for f in self.figures]
        return data


def _class_memory_gib(instance_class: str) -> float | None:
    return RDS_CLASS_MEMORY_GIB.get(instance_class)


def _max_connections(settings: StackSettings, out: list[Violation]) -> tuple[int, str]:
    db = settings.database
    if db.max_connections is not None:
        return db.max_connections, "explicit setting database.max_connections"
    gib = _class_memory_gib(db.instance_class)
    if gib is None:
        out.append(
            Violation(
                "database.max_connections",
                f"instance class {db.instance_class} is not in the kit's memory table; set "
                "database.max_connections explicitly",
            )
        )
        return 0, "unknown"
    memory = int(gib * 1024**3)
    value = min(memory // RDS_MEMORY_DIVISOR, RDS_MAX_CONNECTIONS_CAP)
    return value, (
        f"LEAST({db.instance_class} {gib:g} GiB/{RDS_MEMORY_DIVISOR}, {RDS_MAX_CONNECTIONS_CAP})"
    )


def _pgbouncer(
    settings: StackSettings, ceiling: int, ceiling_text: str, out: list[Violation]
) -> PgBouncerBudget:
    pb = settings.pooler.pgbouncer
    processes = pb.tasks * pb.processes_per_task
    shape = f"{pb.tasks} tasks x {pb.processes_per_task} processes"
    if pb.pool_size is None:
        per_process = ceiling // processes if processes else 0
        pool_size = per_process - pb.reserve_pool
        if pool_size < 1:
            out.append(
                Violation(
                    "pooler.pgbouncer.tasks",
                    f"{ceiling_text} split over {shape} leaves {per_process} server "
                    f"connections per process, not enough for a pool of 1 plus the reserve "
                    f"pool {pb.reserve_pool}; use fewer tasks or processes, a smaller "
                    "reserve_pool, or a larger database",
                )
            )
            pool_size = max(pool_size, 1)
    else:
        pool_size = pb.pool_size
    per_process = pool_size + pb.reserve_pool
    total = processes * per_process
    if total > ceiling:
        setting = (
            "pooler.pgbouncer.pool_size"
            if pb.pool_size is not None
            else "pooler.pgbouncer.reserve_pool"
        )
        out.append(
            Violation(
                setting,
                f"pooler server connections {shape} x ({pool_size} pool + {pb.reserve_pool} "
                f"reserve) = {total} exceed the {ceiling_text}",
            )
        )
    capacity = processes * pb.max_client_conn
    usable = capacity * (100 - pb.client_headroom_percent) // 100
    demand = sum(f.reserved_concurrency for f in settings.functions.values())
    if demand > usable:
        parts = " + ".join(
            f"{name} {f.reserved_concurrency}" for name, f in sorted(settings.functions.items())
        )
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
    statement_s = settings.app_user.statement_timeout_ms / 1000
    result: dict[str, FunctionBudget] = {}
    for name, fn in sorted(settings.functions.items()):
        path = f"functions.{name}"
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
                    "app_user.statement_timeout_ms",
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
        )
    return result


def compute_budget(settings: StackSettings) -> Budget:
    """Derive every number of the stack, or raise `BudgetError` listing every broken invariant."""
    out: list[Violation] = []
    m, m_source = _max_connections(settings, out)
    db = settings.database
    ceiling = m - db.reserved_connections - db.admin_margin
    ceiling_text = (
        f"{ceiling} the database can give the pooler (max_connections {m} - "
        f"{db.reserved_connections} reserved - {db.admin_margin} admin)"
    )
    if m and ceiling < 2:
        out.append(
            Violation(
                "database.admin_margin",
                f"max_connections {m} - {db.reserved_connections} reserved - "
                f"{db.admin_margin} admin = {ceiling} leaves the pooler fewer than 2 connections",
            )
        )
    pgbouncer: PgBouncerBudget | None = None
    rds_proxy: RdsProxyBudget | None = None
    if settings.pooler.kind == "pgbouncer":
        pgbouncer = _pgbouncer(settings, ceiling, ceiling_text, out)
        server_total = pgbouncer.server_connections_total
        queue_wait, queue_setting = (
            pgbouncer.query_wait_timeout_s,
            "pooler.pgbouncer.query_wait_timeout_s",
        )
        reap = pgbouncer.client_idle_timeout_s
        port = pgbouncer.port
    else:
        rds_proxy = _rds_proxy(settings, m, ceiling, ceiling_text, out)
        server_total = rds_proxy.proxy_connections
        queue_wait, queue_setting = (
            rds_proxy.connection_borrow_timeout_s,
            "pooler.rds_proxy.connection_borrow_timeout_s",
        )
        reap = rds_proxy.idle_client_timeout_s
        port = rds_proxy.port
    functions = _functions(settings, queue_wait, queue_setting, reap, out)

    reserved_total = (
        sum(f.reserved_concurrency for f in settings.functions.values())
        + BOOTSTRAP_RESERVED_CONCURRENCY
    )
    reservable = settings.lambda_concurrency_quota - LAMBDA_UNRESERVED_MINIMUM
    if reserved_total > reservable:
        parts = " + ".join(
            f"{name} {f.reserved_concurrency}" for name, f in sorted(settings.functions.items())
        )
        out.append(
            Violation(
                "lambda_concurrency_quota",
                f"reserved concurrency {parts} + bootstrap {BOOTSTRAP_RESERVED_CONCURRENCY} = "
                f"{reserved_total} exceeds the account quota {settings.lambda_concurrency_quota} "
                f"- {LAMBDA_UNRESERVED_MINIMUM} that Lambda keeps unreserved = {reservable}; "
                "request a higher quota in Service Quotas and set it here, or reserve less",
            )
        )

    au = settings.app_user
    app_user = AppUserBudget(
        name=au.name,
        migration_role=au.migration_role,
        schema_name=au.schema_name,
        connection_limit=max(ceiling, 1),
        statement_timeout_ms=au.statement_timeout_ms,
        idle_in_transaction_session_timeout_ms=au.idle_in_transaction_session_timeout_ms,
        lock_timeout_ms=au.lock_timeout_ms,
    )
    if au.name == au.migration_role:
        out.append(Violation("app_user.migration_role", "must differ from app_user.name"))

    alarms_settings = settings.alarms
    warn = math.ceil(m * alarms_settings.warn_percent / 100)
    critical = math.ceil(m * alarms_settings.critical_percent / 100)
    usable_slots = m - db.reserved_connections
    if m and critical > usable_slots:
        out.append(
            Violation(
                "alarms.critical_percent",
                f"critical threshold {alarms_settings.critical_percent}% of {m} = {critical} "
                f"connections is above the {usable_slots} non-reserved slots: it would fire "
                "only after clients are already refused",
            )
        )
    bypass = server_total + db.admin_margin
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
    if out:
        raise BudgetError(out)

    budget = Budget(
        stack=settings.stack,
        max_connections=m,
        max_connections_source=m_source,
        reserved_connections=db.reserved_connections,
        admin_margin=db.admin_margin,
        pooler_ceiling=ceiling,
        pooler_kind=settings.pooler.kind,
        pooler_server_connections=server_total,
        pooler_port=port,
        # A database-wide safety net for every other role (humans with psql included).
        database_idle_in_transaction_ms=max(au.idle_in_transaction_session_timeout_ms, 60_000),
        pgbouncer=pgbouncer,
        rds_proxy=rds_proxy,
        app_user=app_user,
        functions=functions,
        alarms=alarms,
        figures=(),
    )
    return _with_figures(budget, settings)


def _with_figures(budget: Budget, settings: StackSettings) -> Budget:
    m, ceiling = budget.max_connections, budget.pooler_ceiling
    db = settings.database
    figs: list[Figure] = [
        Figure("database.max_connections", m, "connections", budget.max_connections_source),
        Figure(
            "database.reserved_connections",
            db.reserved_connections,
            "connections",
            "superuser_reserved_connections",
        ),
        Figure("database.admin_margin", db.admin_margin, "connections", "admin margin setting"),
        Figure(
            "pooler.ceiling",
            ceiling,
            "connections",
            f"{m} - {db.reserved_connections} reserved - {db.admin_margin} admin",
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
            "pooler ceiling",
            m - db.reserved_connections,
            "non-reserved slots",
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
    demand = sum(f.reserved_concurrency for f in budget.functions.values())
    figs.append(
        Figure(
            "functions.reserved_concurrency",
            demand,
            "instances",
            " + ".join(f"{f.name} {f.reserved_concurrency}" for f in budget.functions.values()),
            pb.usable_client_capacity if pb is not None else None,
            "pooler client capacity" if pb is not None else "",
        )
    )
    figs.append(
        Figure(
            "lambda.reserved_concurrency_total",
            budget.reserved_concurrency_total,
            "instances",
            f"functions {demand} + bootstrap {BOOTSTRAP_RESERVED_CONCURRENCY}",
            settings.lambda_concurrency_quota - LAMBDA_UNRESERVED_MINIMUM,
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
            m - db.reserved_connections,
            "non-reserved slots",
        ),
        Figure(
            "alarms.db_connections_bypass",
            al.db_connections_bypass,
            "connections",
            f"pooler {budget.pooler_server_connections} + admin {db.admin_margin}",
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
    return replace(budget, figures=tuple(figs))
