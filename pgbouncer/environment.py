"""Read a pooler task's configuration from its environment (what the ECS task definition sets).

Every number of `PgBouncerSettings` is read from `PGBOUNCER_<FIELD>` (for example
`PGBOUNCER_DEFAULT_POOL_SIZE`, `PGBOUNCER_QUERY_WAIT_TIMEOUT_S`), so the variable names follow the
dataclass and cannot drift from it; docs/pgbouncer.md lists them. Secrets arrive as environment
variables too (ECS injects Secrets Manager values that way). A bad or missing value is an error
naming the variable.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from pgbouncer import metrics, scram
from pgbouncer.config import (
    ClientTls,
    DatabaseTarget,
    PgBouncerConfigError,
    PgBouncerSettings,
    ProcessPaths,
    ReadTarget,
    UserPool,
    Version,
)

PREFIX = "PGBOUNCER_"
# The workloads' own pools, JSON: [{"user", "pool_size", "max_user_connections",
# "idle_transaction_timeout_s"}]. Unset: no [users] section.
USER_POOLS_VARIABLE = "PGBOUNCER_USER_POOLS"
USER_SECRET_PREFIX = "PGBOUNCER_USER_SECRET_"  # noqa: S105 - a variable name, not a secret
# The tighter form the ECS task uses: only the verifier (`<secret-arn>:scram_verifier::`), so the
# role's plaintext password never reaches the container. The role name is the suffix, lower-cased.
USER_VERIFIER_PREFIX = "PGBOUNCER_USER_VERIFIER_"
STATS_USER = "pgbouncer_stats"
DEFAULT_RUN_DIR = "/var/run/pgbouncer"
DEFAULT_CA_FILE = "/etc/ssl/certs/rds-global-bundle.pem"

# PgBouncerSettings fields read as plain numbers from PGBOUNCER_<FIELD>.
NUMERIC_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(PgBouncerSettings)
    if f.type in ("int", "float", "int | None") and f.name != "fd_limit"
)


class TaskEnvironmentError(PgBouncerConfigError):
    """A variable is missing or malformed; the message names it."""


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise TaskEnvironmentError(f"{name} is not set")
    return value


def _number(env: Mapping[str, str], name: str, kind: str) -> int | float | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return float(text) if kind == "float" else int(text)
    except ValueError:
        raise TaskEnvironmentError(
            f"{name}={text!r} is not {'a number' if kind == 'float' else 'an integer'}"
        ) from None


def user_pools(env: Mapping[str, str]) -> tuple[UserPool, ...]:
    """The `[users]` pools from `PGBOUNCER_USER_POOLS` (the budget's workloads)."""
    text = env.get(USER_POOLS_VARIABLE, "").strip()
    if not text:
        return ()
    try:
        entries = json.loads(text)
        return tuple(
            UserPool(
                user=str(e["user"]),
                pool_size=int(e["pool_size"]),
                max_user_connections=int(e["max_user_connections"]),
                idle_transaction_timeout_s=(
                    int(e["idle_transaction_timeout_s"])
                    if e.get("idle_transaction_timeout_s") is not None
                    else None
                ),
            )
            for e in entries
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise TaskEnvironmentError(
            f"{USER_POOLS_VARIABLE} is not a JSON list of "
            '{"user", "pool_size", "max_user_connections"} objects: ' + str(exc)
        ) from None


def _checked(name: str, verifier: str) -> str:
    try:
        scram.parse(verifier)
    except scram.ScramError as exc:
        raise TaskEnvironmentError(f"{name}: scram_verifier {exc}") from None
    return verifier


def user_verifiers(env: Mapping[str, str]) -> dict[str, str]:
    """Auth-file entries from the injected verifiers or user secrets.

    `PGBOUNCER_USER_VERIFIER_<ROLE>` holds just the role's SCRAM verifier (what the ECS task
    injects); `PGBOUNCER_USER_SECRET_<NAME>` holds the JSON of the role's secret
    (`{"username", ..., "scram_verifier"}`). Either way the pooler gets the exact verifier the
    bootstrap installed as the role's password, so SCRAM pass-through works and no plaintext
    reaches the auth file.
    """
    result: dict[str, str] = {}
    for name in sorted(k for k in env if k.startswith(USER_VERIFIER_PREFIX)):
        role = name[len(USER_VERIFIER_PREFIX) :].lower()
        if not role:
            raise TaskEnvironmentError(f"{name} names no role")
        result[role] = _checked(name, env[name].strip())
    for name in sorted(k for k in env if k.startswith(USER_SECRET_PREFIX)):
        try:
            secret = json.loads(env[name])
        except json.JSONDecodeError:
            raise TaskEnvironmentError(f"{name} is not JSON (the role's secret)") from None
        if not isinstance(secret, dict) or not secret.get("username"):
            raise TaskEnvironmentError(f"{name} has no username")
        verifier = secret.get("scram_verifier")
        if not verifier:
            raise TaskEnvironmentError(
                f"{name} has no scram_verifier: the pooler needs the role's exact SCRAM verifier "
                "(the bootstrap installs it as the role's password)"
            )
        result[str(secret["username"])] = _checked(name, str(verifier))
    if not result:
        raise TaskEnvironmentError(
            f"no {USER_VERIFIER_PREFIX}<ROLE> or {USER_SECRET_PREFIX}<NAME> variable: inject at "
            "least the app user's verifier"
        )
    return result


def _switch(env: Mapping[str, str], name: str, *, default: str) -> bool:
    value = (env.get(name) or default).strip().lower()
    if value not in {"on", "off"}:
        raise TaskEnvironmentError(f"{name}={value!r} must be on or off")
    return value == "on"


def _read_target(env: Mapping[str, str], port: int) -> ReadTarget | None:
    """The read pool (PGBOUNCER_READ_DB_HOST and its numbers), or None without readers."""
    host = env.get(f"{PREFIX}READ_DB_HOST", "").strip()
    if not host:
        return None
    pool = _number(env, f"{PREFIX}READ_POOL_SIZE", "int")
    most = _number(env, f"{PREFIX}READ_MAX_DB_CONNECTIONS", "int")
    return ReadTarget(
        host=host,
        alias=_require(env, f"{PREFIX}READ_DB_ALIAS"),
        port=port,
        pool_size=int(_require(env, f"{PREFIX}READ_POOL_SIZE")) if pool is None else int(pool),
        max_db_connections=int(most) if most is not None else int(pool or 1),
    )


@dataclass(frozen=True)
class TaskConfig:
    """Everything the entrypoint needs, read once at start."""

    settings: PgBouncerSettings
    verifiers: dict[str, str]
    stats_password: str
    client_cert_pem: str
    client_key_pem: str
    run_dir: Path
    drain_timeout_s: float
    run_as: str | None
    metrics_enabled: bool
    metrics_namespace: str
    metrics_dimensions: str
    metrics_interval_s: float

    def admin_conninfo(self, process: int) -> str:
        """The stats user's console conninfo for one process, over its unix socket."""
        return make_conninfo(
            "",
            host=self.settings.paths[process].unix_socket_dir,
            port=self.settings.listen_port,
            dbname="pgbouncer",
            user=STATS_USER,
            password=self.stats_password,
            connect_timeout=5,
        )


def process_paths(run_dir: Path, processes: int) -> tuple[ProcessPaths, ...]:
    return tuple(
        ProcessPaths(
            pidfile=str(run_dir / f"pgbouncer-{i + 1}.pid"),
            unix_socket_dir=str(run_dir / str(i + 1)),
        )
        for i in range(processes)
    )


def read(env: Mapping[str, str], *, version: Version, fd_limit: int | None) -> TaskConfig:
    """The task's configuration from `env`; raises TaskEnvironmentError naming a bad variable."""
    run_dir = Path(env.get(f"{PREFIX}RUN_DIR", "") or DEFAULT_RUN_DIR)
    numbers: dict[str, Any] = {}
    kinds = {f.name: str(f.type) for f in dataclasses.fields(PgBouncerSettings)}
    for field_name in NUMERIC_FIELDS:
        kind = "float" if kinds[field_name] == "float" else "int"
        value = _number(env, f"{PREFIX}{field_name.upper()}", kind)
        if value is not None:
            numbers[field_name] = value
    processes = int(numbers.pop("processes", 1))
    db_port = _number(env, f"{PREFIX}DB_PORT", "int")
    database = DatabaseTarget(
        host=_require(env, f"{PREFIX}DB_HOST"),
        port=int(db_port) if db_port is not None else 5432,
        dbname=_require(env, f"{PREFIX}DB_NAME"),
        alias=env.get(f"{PREFIX}DB_ALIAS") or None,
        ca_file=env.get(f"{PREFIX}DB_CA_FILE") or DEFAULT_CA_FILE,
        sslmode=env.get(f"{PREFIX}DB_SSLMODE") or "verify-full",
    )
    settings = PgBouncerSettings(
        version=version,
        database=database,
        read_database=_read_target(env, database.port),
        writer_guard=_switch(env, f"{PREFIX}WRITER_GUARD", default="off"),
        auth_file=str(run_dir / "userlist.txt"),
        # The admin console answers the task itself only (health check, exporter).
        hba_file=str(run_dir / "pgbouncer_hba.conf"),
        paths=process_paths(run_dir, processes),
        listen_addr=env.get(f"{PREFIX}LISTEN_ADDR") or "0.0.0.0",  # noqa: S104 - in the task
        processes=processes,
        client_tls=ClientTls(
            cert_file=str(run_dir / "client-tls.crt"), key_file=str(run_dir / "client-tls.key")
        ),
        admin_users=(),
        stats_users=(STATS_USER,),
        fd_limit=fd_limit,
        user_pools=user_pools(env),
        **numbers,
    )
    verifiers = user_verifiers(env)
    if STATS_USER in verifiers:
        raise TaskEnvironmentError(f"{STATS_USER} is reserved for the exporter; rename the role")
    drain = _number(env, f"{PREFIX}DRAIN_TIMEOUT_S", "float")
    interval = _number(env, f"{PREFIX}METRICS_INTERVAL_S", "float")
    switch = (env.get(f"{PREFIX}METRICS") or "on").strip().lower()
    if switch not in {"on", "off"}:
        raise TaskEnvironmentError(f"{PREFIX}METRICS={switch!r} must be on or off")
    return TaskConfig(
        settings=settings,
        verifiers=verifiers,
        stats_password=_require(env, f"{PREFIX}STATS_PASSWORD"),
        client_cert_pem=_require(env, f"{PREFIX}CLIENT_TLS_CERT"),
        client_key_pem=_require(env, f"{PREFIX}CLIENT_TLS_KEY"),
        run_dir=run_dir,
        drain_timeout_s=float(drain) if drain is not None else 25.0,
        run_as=env.get(f"{PREFIX}RUN_AS") or None,
        metrics_enabled=switch == "on",
        metrics_namespace=env.get(f"{PREFIX}METRICS_NAMESPACE") or metrics.NAMESPACE,
        metrics_dimensions=env.get(f"{PREFIX}METRICS_DIMENSIONS", ""),
        metrics_interval_s=float(interval) if interval is not None else 60.0,
    )
