"""Render `pgbouncer.ini` (one per process) and the auth file from the connection budget's numbers.

Pure code: no I/O, no imports from the rest of the repository. The image's entrypoint and the local
target both call `render()`, so the pooler that runs on ECS and the one rehearsed on this machine
come from the same text. Every number is explicit (the budget derives them); this module only
checks that they are consistent with each other and with the PgBouncer version that will read
them, and refuses, naming the setting, anything that version cannot honour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The NLB in front of the ECS tasks drops a TCP flow idle for 350 s; keepalives must start before.
NLB_IDLE_TIMEOUT_S = 350

# The admin/stats console is the virtual database of this name.
ADMIN_DATABASE = "pgbouncer"
# Where the admin console may be reached from: the task itself (the health check and the exporter
# connect over the processes' unix sockets; loopback TCP stays open for an operator in the
# task). Clients arriving through the NLB never reach it, whatever password they hold.
ADMIN_LOCAL_NETWORKS: tuple[str, ...] = ("127.0.0.1/32", "::1/128")

# File descriptors a process needs beyond one per client and one per server connection: listening
# sockets, the log, the pid file, DNS (c-ares), the admin console, and a safety margin.
FD_MARGIN = 64

Version = tuple[int, int]


class PgBouncerConfigError(ValueError):
    """The settings are inconsistent, exceed the budget, or ask for something PgBouncer lacks."""


class UnsupportedSettingError(PgBouncerConfigError):
    """A setting the target PgBouncer version does not know or cannot honour."""


# Settings that appeared after 1.12 (the oldest version this module renders for), with the first
# version that reads them. PgBouncer refuses to start on an unknown key, so a key is emitted only
# when the target version knows it.
SINCE: dict[str, Version] = {
    "tcp_user_timeout": (1, 14),
    "peer_id": (1, 19),
    "track_extra_parameters": (1, 20),
    "max_prepared_statements": (1, 21),
    "max_db_client_connections": (1, 24),
    "max_user_client_connections": (1, 24),
}
OLDEST_SUPPORTED: Version = (1, 12)

# Startup parameters PgBouncer accepts and drops instead of refusing the login. Only
# `extra_float_digits`, which pgjdbc (3) and lib/pq (2) send with every connection: on PostgreSQL
# 12 and later any value above 0 selects the same shortest-precise float output as the default 1,
# so dropping it changes nothing (the stack runs PostgreSQL 13+). `options` is not in the list: a
# client passing `-c statement_timeout=...` there is refused with a message naming it rather
# than silently losing it (timeouts live on the role).
IGNORED_STARTUP_PARAMETERS: tuple[str, ...] = ("extra_float_digits",)


def parse_version(text: str) -> Version:
    """`"1.18.0"`, `"PgBouncer 1.24.1"` or `"1.24"` -> `(1, 18)`; the patch level never matters."""
    token = text.strip().split()[-1] if text.strip() else ""
    parts = token.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise PgBouncerConfigError(
            f"PgBouncer version {text!r} is not of the form MAJOR.MINOR[.PATCH]"
        ) from None
    return (major, minor)


def version_text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class DatabaseTarget:
    """The real database behind the pooler (the RDS endpoint on AWS)."""

    host: str
    port: int = 5432
    dbname: str = "app"
    # The name clients use in their conninfo; the same as the database by default.
    alias: str | None = None
    # Where PgBouncer verifies the server certificate from: the RDS CA bundle on AWS.
    ca_file: str | None = None
    # `verify-full` always in the stack; weaker modes exist only for explicit local experiments.
    sslmode: str = "verify-full"

    @property
    def client_name(self) -> str:
        return self.alias or self.dbname


# The read pool's server connections refuse writes whichever instance they land on: Aurora's
# reader endpoint points at the writer when a cluster has no reader left. Set per server
# connection, so PgBouncer's transaction pooling keeps it (clients cannot pass it as `options`,
# which the pooler refuses).
READ_ONLY_CONNECT_QUERY = "SET default_transaction_read_only = on"
# The write pool refuses a server connection that lands on a reader (a hot standby): after a
# failover the old writer's address may still be cached for up to `dns_max_ttl`, and a
# connection opened to it then would fail every write until `server_lifetime`. On a standby
# pg_is_in_recovery() is true, the division fails, and PgBouncer drops the connection and
# retries the login after `server_login_retry`.
WRITER_GUARD_CONNECT_QUERY = "SELECT 1 / (NOT pg_is_in_recovery())::int"


@dataclass(frozen=True)
class ReadTarget:
    """A second pool on the reader endpoint (Aurora readers), under its own client-side name."""

    host: str
    alias: str
    port: int = 5432
    # Per process, like the main pool's: the budget sizes them against one reader's ceiling.
    pool_size: int = 1
    max_db_connections: int = 1


@dataclass(frozen=True)
class ClientTls:
    """The pooler's own certificate, presented to the functions (they verify it)."""

    cert_file: str
    key_file: str
    # `require`: TCP clients without TLS are refused (unix-socket clients are local).
    sslmode: str = "require"


@dataclass(frozen=True)
class UserPool:
    """One role's own pool: a `[users]` line (pools are per (database, user) in PgBouncer).

    PgBouncer 1.24's doc/config.md, section [users]: `pool_size` ("the maximum size of pools for
    all connections from this user"), `max_user_connections` (all pools of the user together)
    and `idle_transaction_timeout` may be set per user; the reserve pool is inherited.
    """

    user: str
    pool_size: int
    max_user_connections: int
    idle_transaction_timeout_s: int | None = None


@dataclass(frozen=True)
class ProcessPaths:
    """Per-process files: with `so_reuseport` each process needs its own pid file and socket dir."""

    pidfile: str
    unix_socket_dir: str
    # Empty: log to stderr (ECS ships it to CloudWatch Logs); a path on the local target.
    logfile: str = ""


@dataclass(frozen=True)
class PgBouncerSettings:
    """What the connection budget decides for one pooler task, all numbers explicit.

    Pool numbers are *per process*: a task running `processes` PgBouncer processes holds up to
    `processes x max_db_connections` server connections and accepts up to
    `processes x max_client_conn` clients.
    """

    version: Version
    database: DatabaseTarget
    auth_file: str
    paths: tuple[ProcessPaths, ...]
    listen_port: int = 6432  # PgBouncer's conventional port; the NLB target group uses it
    listen_addr: str = "0.0.0.0"  # noqa: S104 - inside the task; the security group decides who
    # More than one uses more cores of the task (PgBouncer is single-threaded), via so_reuseport.
    processes: int = 1
    # -- server side, per process --------------------------------------------------------------
    # Server connections per (database, user) pool: the budget's share, never PgBouncer's 20.
    default_pool_size: int = 20
    # Extra connections for a pool whose clients waited reserve_pool_timeout_s; 0 because a storm
    # would always claim them, and the budget counts them against the database anyway.
    reserve_pool_size: int = 0
    reserve_pool_timeout_s: float = 3.0
    # No pre-opened connections: a connection the database does not need is a slot it lacks.
    min_pool_size: int = 0
    # The hard ceiling across every pool of the database (pools are per user): what makes
    # "the pooler never exceeds its share" true even with a migration user beside app_user.
    max_db_connections: int = 20
    # -- client side, per process --------------------------------------------------------------
    # Clients are cheap (a few kB each); the budget sizes this to the functions' concurrency.
    max_client_conn: int = 1000
    # Kernel accept queue: a burst connects thousands at once; must be near max_client_conn.
    listen_backlog: int = 4096
    # -- timeouts, seconds (0 disables where PgBouncer allows it) ------------------------------
    # A queued client gets an error well before the function's own timeout kills it.
    query_wait_timeout_s: int = 10
    # Reaps clients of frozen or dead function instances; below the NLB's 350 s idle timeout.
    client_idle_timeout_s: int = 300
    client_login_timeout_s: int = 15
    # Returns idle server connections to the database after a burst.
    server_idle_timeout_s: int = 60
    # Recycles server connections (memory bloat, DNS changes after a failover).
    server_lifetime_s: int = 3600
    server_connect_timeout_s: int = 5
    server_login_retry_s: int = 2
    # A client idle inside a transaction holds a server connection others wait for.
    idle_transaction_timeout_s: int = 30
    # statement_timeout on the role does this job in the database; 0 leaves it there.
    query_timeout_s: int = 0
    # -- TCP keepalives on both legs: first probe after idle s, then every interval s ----------
    # The first probe goes out before the NLB's 350 s idle timeout drops the flow.
    tcp_keepidle_s: int = 120
    tcp_keepintvl_s: int = 15
    tcp_keepcnt: int = 4
    tcp_user_timeout_ms: int = 0
    # Protocol-level prepared statements in transaction mode (1.21+); 0 disables, the functions
    # do not prepare (psycopg prepare_threshold=None) so they work through any version.
    max_prepared_statements: int = 0
    client_tls: ClientTls | None = None
    admin_users: tuple[str, ...] = ()
    # Console users allowed SHOW commands only: the exporter and the health check.
    stats_users: tuple[str, ...] = ()
    # File descriptors one process may open (`ulimit -n`); None skips the check.
    fd_limit: int | None = None
    # Server connections this task may hold (the budget's share of the database); None: no check.
    database_share: int | None = None
    # 1.18 has no `peer_id`: a cancel request that lands on a sibling process is lost. Allowed only
    # when asked, for rehearsing several processes on an old local PgBouncer.
    allow_lost_cancels: bool = False
    # Further `key = value` lines, checked against the version like the rest.
    extra: dict[str, str] = field(default_factory=dict)
    # `auth_type = hba` with this file (render_hba): the admin console from the task only. None
    # keeps plain scram-sha-256 for every connection.
    hba_file: str | None = None
    # Networks besides the unix sockets that may reach the admin console.
    admin_networks: tuple[str, ...] = ADMIN_LOCAL_NETWORKS
    # Roles with a pool of their own (the budget's workloads); every other user gets
    # default_pool_size. Empty: no `[users]` section.
    user_pools: tuple[UserPool, ...] = ()
    # -- Aurora: a read pool and failover (None/False: the single-instance rendering of old) --
    read_database: ReadTarget | None = None
    # Refuse server connections that land on a standby (WRITER_GUARD_CONNECT_QUERY).
    writer_guard: bool = False
    # PgBouncer's cache of a resolved host name (its default is 15 s); None leaves it unset.
    dns_max_ttl_s: int | None = None
    # How long an idle server connection may go unchecked before reuse.
    server_check_delay_s: int = 30

    @property
    def fds_needed(self) -> int:
        """Per process: one per client, one per server connection, plus the fixed margin."""
        return self.max_client_conn + self.max_db_connections + FD_MARGIN


@dataclass(frozen=True)
class RenderedConfig:
    """The rendered text: one ini per process and the shared auth file."""

    ini: tuple[str, ...]
    auth_file: str
    # The HBA file's text when `hba_file` is set, else "".
    hba: str = ""


def _check(settings: PgBouncerSettings) -> None:  # noqa: PLR0912 - one check per rule
    s = settings
    v = version_text(s.version)
    if s.version < OLDEST_SUPPORTED:
        raise UnsupportedSettingError(
            f"PgBouncer {v} is older than {version_text(OLDEST_SUPPORTED)}, the oldest this kit "
            "renders for (it needs so_reuseport and scram-sha-256)"
        )
    if s.processes < 1:
        raise PgBouncerConfigError(f"processes {s.processes} must be at least 1")
    if len(s.paths) != s.processes:
        raise PgBouncerConfigError(
            f"paths lists {len(s.paths)} process(es) but processes is {s.processes}: "
            "each process needs its own pid file and unix socket directory"
        )
    if len({p.unix_socket_dir for p in s.paths}) != len(s.paths) or len(
        {p.pidfile for p in s.paths}
    ) != len(s.paths):
        raise PgBouncerConfigError(
            "paths: every process needs a distinct pidfile and unix_socket_dir"
        )
    if s.processes > 1 and s.version < SINCE["peer_id"] and not s.allow_lost_cancels:
        raise UnsupportedSettingError(
            f"processes {s.processes} needs peer_id (PgBouncer {version_text(SINCE['peer_id'])}+) "
            f"so a cancel request reaches the process running the query; PgBouncer {v} has none: "
            "set processes to 1, or allow_lost_cancels for a local rehearsal"
        )
    if s.max_prepared_statements and s.version < SINCE["max_prepared_statements"]:
        raise UnsupportedSettingError(
            f"max_prepared_statements {s.max_prepared_statements} needs PgBouncer "
            f"{version_text(SINCE['max_prepared_statements'])}+ (target is {v}): set it to 0 and "
            "disable client-side prepared statements (psycopg prepare_threshold=None)"
        )
    if s.tcp_user_timeout_ms and s.version < SINCE["tcp_user_timeout"]:
        raise UnsupportedSettingError(
            f"tcp_user_timeout_ms needs PgBouncer {version_text(SINCE['tcp_user_timeout'])}+"
        )
    for name in s.extra:
        since = SINCE.get(name)
        if since is not None and s.version < since:
            raise UnsupportedSettingError(
                f"extra setting {name} needs PgBouncer {version_text(since)}+ (target is {v})"
            )
    positive = {
        "default_pool_size": s.default_pool_size,
        "max_db_connections": s.max_db_connections,
        "max_client_conn": s.max_client_conn,
        "listen_backlog": s.listen_backlog,
        "query_wait_timeout_s": s.query_wait_timeout_s,
        "client_idle_timeout_s": s.client_idle_timeout_s,
        "tcp_keepidle_s": s.tcp_keepidle_s,
        "tcp_keepintvl_s": s.tcp_keepintvl_s,
        "tcp_keepcnt": s.tcp_keepcnt,
    }
    for name, value in positive.items():
        if value <= 0:
            raise PgBouncerConfigError(f"{name} {value} must be positive")
    if s.reserve_pool_size < 0 or s.min_pool_size < 0:
        raise PgBouncerConfigError("reserve_pool_size and min_pool_size must not be negative")
    pool_total = s.default_pool_size + s.reserve_pool_size
    if pool_total > s.max_db_connections:
        raise PgBouncerConfigError(
            f"default_pool_size {s.default_pool_size} + reserve_pool_size {s.reserve_pool_size} "
            f"= {pool_total} exceed max_db_connections {s.max_db_connections}: the reserve could "
            "never be used; lower the pool or raise max_db_connections"
        )
    _check_user_pools(s)
    if s.min_pool_size > s.default_pool_size:
        raise PgBouncerConfigError(
            f"min_pool_size {s.min_pool_size} exceeds default_pool_size {s.default_pool_size}"
        )
    if s.database_share is not None:
        task_total = s.processes * s.max_db_connections
        if task_total > s.database_share:
            raise PgBouncerConfigError(
                f"processes {s.processes} x max_db_connections {s.max_db_connections} = "
                f"{task_total} exceed the task's database share {s.database_share}"
            )
    if s.listen_backlog < s.max_client_conn // 4:
        # A storm connects many clients at once; a backlog far below the client capacity makes
        # the kernel drop SYNs that PgBouncer would have accepted a moment later.
        raise PgBouncerConfigError(
            f"listen_backlog {s.listen_backlog} is below max_client_conn {s.max_client_conn} / 4 "
            f"= {s.max_client_conn // 4}: raise listen_backlog so a connection burst is queued, "
            "not dropped"
        )
    if s.fd_limit is not None and s.fds_needed > s.fd_limit:
        raise PgBouncerConfigError(
            f"max_client_conn {s.max_client_conn} + max_db_connections {s.max_db_connections} + "
            f"margin {FD_MARGIN} = {s.fds_needed} file descriptors exceed the nofile limit "
            f"{s.fd_limit}: raise the limit (ulimit -n / the task's ulimits) or lower "
            "max_client_conn"
        )
    keepalive_dead_after = s.tcp_keepidle_s
    if keepalive_dead_after >= NLB_IDLE_TIMEOUT_S:
        raise PgBouncerConfigError(
            f"tcp_keepidle_s {s.tcp_keepidle_s} must be below the NLB idle timeout "
            f"{NLB_IDLE_TIMEOUT_S} s, or the NLB drops idle flows before the first keepalive"
        )
    if s.client_idle_timeout_s >= NLB_IDLE_TIMEOUT_S:
        raise PgBouncerConfigError(
            f"client_idle_timeout_s {s.client_idle_timeout_s} must be below the NLB idle timeout "
            f"{NLB_IDLE_TIMEOUT_S} s so the pooler, not the NLB, reaps frozen clients"
        )
    if s.database.sslmode not in {
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    }:
        raise PgBouncerConfigError(f"database.sslmode {s.database.sslmode!r} is not an sslmode")
    _check_read(s)
    if s.database.sslmode.startswith("verify") and not s.database.ca_file:
        raise PgBouncerConfigError(
            f"database.sslmode {s.database.sslmode} needs database.ca_file (the RDS CA bundle)"
        )


def _check_user_pools(s: PgBouncerSettings) -> None:
    """Each role's own pool is guaranteed: all pools and the reserve fit max_db_connections."""
    if not s.user_pools:
        return
    names = [p.user for p in s.user_pools]
    if len(set(names)) != len(names):
        raise PgBouncerConfigError(f"user_pools names a user twice: {', '.join(names)}")
    for pool in s.user_pools:
        if not pool.user or any(c.isspace() or c in '"=' for c in pool.user):
            raise PgBouncerConfigError(f"user_pools: {pool.user!r} cannot be a [users] key")
        if pool.pool_size < 1 or pool.max_user_connections < pool.pool_size:
            raise PgBouncerConfigError(
                f"user_pools {pool.user}: pool_size {pool.pool_size} must be at least 1 and at "
                f"most max_user_connections {pool.max_user_connections}"
            )
    pools = sum(p.pool_size for p in s.user_pools)
    total = s.default_pool_size + pools + s.reserve_pool_size
    if total > s.max_db_connections:
        parts = " + ".join(f"{p.user} {p.pool_size}" for p in s.user_pools)
        raise PgBouncerConfigError(
            f"default_pool_size {s.default_pool_size} + user pools {parts} + reserve_pool_size "
            f"{s.reserve_pool_size} = {total} exceed max_db_connections {s.max_db_connections}: "
            "a pool could not get its share while the others hold theirs"
        )


def _users_section(s: PgBouncerSettings) -> str:
    if not s.user_pools:
        return ""
    lines = []
    for pool in s.user_pools:
        parts = [f"pool_size={pool.pool_size}", f"max_user_connections={pool.max_user_connections}"]
        if pool.idle_transaction_timeout_s is not None:
            parts.append(f"idle_transaction_timeout={pool.idle_transaction_timeout_s}")
        lines.append(f"{pool.user} = " + " ".join(parts))
    return "\n[users]\n" + "\n".join(lines) + "\n"


def _check_read(s: PgBouncerSettings) -> None:
    read = s.read_database
    if read is None:
        return
    if read.alias in {s.database.client_name, ADMIN_DATABASE}:
        raise PgBouncerConfigError(
            f"read_database.alias {read.alias!r} must differ from the main database's name and "
            f"from {ADMIN_DATABASE!r}"
        )
    if not 1 <= read.pool_size <= read.max_db_connections:
        raise PgBouncerConfigError(
            f"read_database pool_size {read.pool_size} must be between 1 and its "
            f"max_db_connections {read.max_db_connections}"
        )


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _database_line(s: PgBouncerSettings) -> str:
    db = s.database
    parts = [f"host={db.host}", f"port={db.port}", f"dbname={db.dbname}"]
    if s.writer_guard:
        parts.append(f"connect_query='{WRITER_GUARD_CONNECT_QUERY}'")
    line = f"{db.client_name} = " + " ".join(parts)
    read = s.read_database
    if read is not None:
        line += (
            f"\n{read.alias} = host={read.host} port={read.port} dbname={db.dbname} "
            f"pool_size={read.pool_size} max_db_connections={read.max_db_connections} "
            f"connect_query='{READ_ONLY_CONNECT_QUERY}'"
        )
    return line


def _process_settings(s: PgBouncerSettings, index: int) -> dict[str, object]:
    paths = s.paths[index]
    out: dict[str, object] = {
        "listen_addr": s.listen_addr,
        "listen_port": s.listen_port,
        "unix_socket_dir": paths.unix_socket_dir,
        "pidfile": paths.pidfile,
        "logfile": paths.logfile,
        "auth_type": "hba" if s.hba_file else "scram-sha-256",
        "auth_file": s.auth_file,
        "pool_mode": "transaction",
        "default_pool_size": s.default_pool_size,
        "min_pool_size": s.min_pool_size,
        "reserve_pool_size": s.reserve_pool_size,
        "reserve_pool_timeout": s.reserve_pool_timeout_s,
        "max_db_connections": s.max_db_connections,
        "max_client_conn": s.max_client_conn,
        "listen_backlog": s.listen_backlog,
        "query_wait_timeout": s.query_wait_timeout_s,
        "query_timeout": s.query_timeout_s,
        "client_idle_timeout": s.client_idle_timeout_s,
        "client_login_timeout": s.client_login_timeout_s,
        "server_idle_timeout": s.server_idle_timeout_s,
        "server_lifetime": s.server_lifetime_s,
        "server_connect_timeout": s.server_connect_timeout_s,
        "server_login_retry": s.server_login_retry_s,
        "idle_transaction_timeout": s.idle_transaction_timeout_s,
        # Transaction pooling: nothing session-scoped survives, so no reset query is needed
        # (PgBouncer skips it in transaction mode anyway); `DISCARD ALL` on release would cost a
        # round trip per transaction.
        "server_reset_query": "",
        "server_check_query": "select 1",
        "server_check_delay": s.server_check_delay_s,
        # See IGNORED_STARTUP_PARAMETERS: `extra_float_digits` only; `options` stays refused.
        "ignore_startup_parameters": ",".join(IGNORED_STARTUP_PARAMETERS),
        "application_name_add_host": 0,
        "tcp_keepalive": 1,
        "tcp_keepidle": s.tcp_keepidle_s,
        "tcp_keepintvl": s.tcp_keepintvl_s,
        "tcp_keepcnt": s.tcp_keepcnt,
        "log_connections": 0,
        "log_disconnections": 0,
        "log_pooler_errors": 1,
        "stats_period": 60,
        "server_tls_sslmode": s.database.sslmode,
        "server_tls_protocols": "secure",
    }
    if s.dns_max_ttl_s is not None:
        out["dns_max_ttl"] = s.dns_max_ttl_s
    if s.hba_file:
        out["auth_hba_file"] = s.hba_file
    if s.database.ca_file:
        out["server_tls_ca_file"] = s.database.ca_file
    if s.client_tls is not None:
        out["client_tls_sslmode"] = s.client_tls.sslmode
        out["client_tls_cert_file"] = s.client_tls.cert_file
        out["client_tls_key_file"] = s.client_tls.key_file
        out["client_tls_protocols"] = "secure"
    if s.admin_users:
        out["admin_users"] = ",".join(s.admin_users)
    if s.stats_users:
        out["stats_users"] = ",".join(s.stats_users)
    if s.version >= SINCE["tcp_user_timeout"]:
        out["tcp_user_timeout"] = s.tcp_user_timeout_ms
    if s.processes > 1:
        out["so_reuseport"] = 1
        if s.version >= SINCE["peer_id"]:
            out["peer_id"] = index + 1
    if s.version >= SINCE["max_prepared_statements"]:
        out["max_prepared_statements"] = s.max_prepared_statements
    out.update(s.extra)
    return out


def _peers_section(s: PgBouncerSettings) -> str:
    if s.processes == 1 or s.version < SINCE["peer_id"]:
        return ""
    lines = [
        f"{i + 1} = host={p.unix_socket_dir} port={s.listen_port}" for i, p in enumerate(s.paths)
    ]
    return "\n[peers]\n" + "\n".join(lines) + "\n"


def render_ini(settings: PgBouncerSettings) -> tuple[str, ...]:
    """One `pgbouncer.ini` text per process, after every consistency check passed."""
    _check(settings)
    texts = []
    for index in range(settings.processes):
        body = "".join(
            f"{key} = {_value(value)}\n"
            for key, value in _process_settings(settings, index).items()
        )
        texts.append(
            f"; rendered for PgBouncer {version_text(settings.version)}, process {index + 1} of "
            f"{settings.processes}; edit the stack settings, not this file\n"
            "[databases]\n"
            f"{_database_line(settings)}\n\n"
            "[pgbouncer]\n"
            f"{body}"
            f"{_peers_section(settings)}"
            f"{_users_section(settings)}"
        )
    return tuple(texts)


def _quote(text: str) -> str:
    # userlist.txt escapes a double quote inside a field by doubling it.
    return '"' + text.replace('"', '""') + '"'


def render_auth_file(verifiers: dict[str, str]) -> str:
    """`userlist.txt` lines `"user" "SCRAM-SHA-256$..."`; a plaintext password is refused.

    The pooler holds only SCRAM verifiers: with the same verifier installed as the role's password
    PgBouncer logs into the database with the client's proof (SCRAM pass-through).
    """
    lines = []
    for user, verifier in sorted(verifiers.items()):
        if not verifier.startswith("SCRAM-SHA-256$"):
            raise PgBouncerConfigError(
                f"auth file entry for {user!r} is not a SCRAM-SHA-256 verifier; the pooler must "
                "not hold plaintext or md5 passwords (compute one with pgbouncer.scram)"
            )
        if not user or "\n" in user or "\r" in user:
            raise PgBouncerConfigError(f"user name {user!r} cannot go in the auth file")
        lines.append(f"{_quote(user)} {_quote(verifier)}\n")
    return "".join(lines)


def render_hba(settings: PgBouncerSettings) -> str:
    """pg_hba-style rules (PgBouncer's `auth_type = hba`), first match wins.

    The admin console (`pgbouncer` database) is reachable over the unix sockets and the listed
    local networks only, and refused from anywhere else before any password is checked; every
    other database takes SCRAM from any address (TLS is enforced by client_tls_sslmode, and the
    security groups decide who reaches the port at all).
    """
    for network in settings.admin_networks:
        if not network or any(c.isspace() for c in network) or "/" not in network:
            raise PgBouncerConfigError(
                f"admin_networks entry {network!r} is not an address/prefix (e.g. 127.0.0.1/32)"
            )
    lines = [
        "# rendered by pgbouncer/config.py: the admin console from the task only",
        f"local {ADMIN_DATABASE} all scram-sha-256",
        *(f"host {ADMIN_DATABASE} all {n} scram-sha-256" for n in settings.admin_networks),
        f"host {ADMIN_DATABASE} all 0.0.0.0/0 reject",
        f"host {ADMIN_DATABASE} all ::/0 reject",
        "local all all scram-sha-256",
        "host all all 0.0.0.0/0 scram-sha-256",
        "host all all ::/0 scram-sha-256",
    ]
    return "\n".join(lines) + "\n"


def render(settings: PgBouncerSettings, verifiers: dict[str, str]) -> RenderedConfig:
    """Everything a pooler task writes before starting PgBouncer."""
    missing = [u for u in (*settings.admin_users, *settings.stats_users) if u not in verifiers]
    if missing:
        raise PgBouncerConfigError(
            f"admin/stats user(s) {', '.join(missing)} have no verifier for the auth file"
        )
    pooled = [p.user for p in settings.user_pools if p.user not in verifiers]
    if pooled:
        # PgBouncer would "pretend the user exists" and refuse every password (doc/config.md).
        raise PgBouncerConfigError(
            f"user(s) {', '.join(pooled)} have a pool of their own but no verifier for the auth "
            "file: inject each workload role's verifier"
        )
    return RenderedConfig(
        render_ini(settings),
        render_auth_file(verifiers),
        render_hba(settings) if settings.hba_file else "",
    )
