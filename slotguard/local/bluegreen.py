"""A local blue/green deployment: a green server of the next major, synced by logical replication.

RDS builds a major-version blue/green deployment with PostgreSQL's logical replication
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/blue-green-deployments-replication-type.html:
"if you request a major version upgrade ... Amazon RDS uses logical replication"), and its
switchover stops writes on blue, drops blue's connections, waits for green to catch up, then moves
the endpoint (https://aws.amazon.com/blogs/database/achieve-faster-switchover-for-amazon-rds-blue-green-deployments-with-large-number-of-connections/,
steps 1-7). Here: green is initialised with the next major's binaries, gets blue's roles (with
their SCRAM verifiers, so the pooler's pass-through logins keep working) and schema, subscribes to
a publication of every table on blue, and `switchover` does the same steps, the endpoint move being
the caller's (re-pointing the pooler). Logical replication does not carry sequences
(https://www.postgresql.org/docs/16/logical-replication-restrictions.html: "Sequence data is not
replicated"), so they are copied while blue is read-only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from slotguard.local.postgres import LocalPostgres
from slotguard.local.replica import share_identity
from slotguard.local.system import ensure_programs

NAME = "slotguard_bluegreen"
SYNC_TIMEOUT_S = 60.0
CATCH_UP_TIMEOUT_S = 30.0


class BlueGreenError(RuntimeError):
    """Green could not be built, synced or switched to; the message says which step."""


def _conninfo(server: LocalPostgres, dbname: str, *, password: bool) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=server.settings.port,
        user="postgres",
        dbname=dbname,
        sslmode="verify-full",
        sslrootcert=str(server.tls.ca_cert),
        **({"password": server.master_password} if password else {}),
    )


def _connect(server: LocalPostgres, dbname: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(_conninfo(server, dbname, password=True), autocommit=True)


def enable_logical_replication(blue: LocalPostgres) -> bool:
    """`wal_level = logical` on blue (RDS: `rds.logical_replication`), restarting if needed.

    True when blue was restarted. Left on afterwards, as the parameter stays on an RDS instance.
    """
    with blue.connect_admin() as conn:
        row = conn.execute("SHOW wal_level").fetchone()
        if row is not None and row[0] == "logical":
            return False
        conn.execute("ALTER SYSTEM SET wal_level = logical")
    blue.restart("fast")
    blue.wait_ready()
    return True


@dataclasses.dataclass
class GreenDeployment:
    """Blue (the stack's server), green (next major) and the database replicated between them."""

    blue: LocalPostgres
    green: LocalPostgres
    database: str
    steps: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def green_major(self) -> int:
        return self.green.major


def create_green(
    blue: LocalPostgres, root: Path, port: int, database: str, major: int | None = None
) -> GreenDeployment:
    """Build green from blue (roles, schema, then every row by logical replication) and sync it."""
    target_major = major or blue.major + 1
    ensure_programs(postgres_major=target_major)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    share_identity(blue, root)
    settings = dataclasses.replace(
        blue.settings,
        port=port,
        major=target_major,
        # Green publishes too once it is the writer: the way back for the drill's clean-up.
        extra={**blue.settings.extra, "wal_level": "logical"},
    )
    green = LocalPostgres(root, settings, blue.user)
    green.stop("immediate")
    if green.data_dir.exists():
        shutil.rmtree(green.data_dir)
    green.init(sync=False)  # a throwaway server for the drill: no need to wait for the disk
    green.start()
    green.wait_ready()
    deployment = GreenDeployment(blue, green, database)
    deployment.steps["initdb_s"] = time.monotonic() - started
    _copy_definitions(deployment)
    deployment.steps["definitions_s"] = time.monotonic() - started
    with _connect(blue, database) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(NAME)))
    subscribe(green, blue, database, copy_data=True)
    wait_synced(green, database)
    deployment.steps["synced_s"] = time.monotonic() - started
    return deployment


def _copy_definitions(deployment: GreenDeployment) -> None:
    """Blue's roles and the database's schema into green, with green's (newer) client tools."""
    blue, green = deployment.blue, deployment.green
    env = {"PGPASSWORD": blue.master_password}
    dumps = (
        ("roles.sql", ("pg_dumpall", "--roles-only"), "postgres", "0"),
        ("schema.sql", ("pg_dump", "--schema-only", "--create"), deployment.database, "1"),
    )
    for file_name, command, dbname, stop_on_error in dumps:
        dumped = green._run(
            *command,
            "--no-password",
            "--dbname",
            _conninfo(blue, dbname, password=False),
            check=False,
            env=env,
        )
        if dumped.returncode != 0:
            raise BlueGreenError(f"{command[0]} from blue failed: {dumped.stderr.strip()}")
        path = green.root / file_name
        path.write_text(dumped.stdout)
        if green.user is not None:
            os.chown(path, green.user.uid, green.user.gid)
        # Roles: `postgres` exists already, so that one statement fails and the rest apply.
        restored = green._run(
            "psql",
            "-X",
            "-q",
            "-v",
            f"ON_ERROR_STOP={stop_on_error}",
            "--no-password",
            "-d",
            _conninfo(green, "postgres", password=False),
            "-f",
            str(path),
            check=False,
            env={"PGPASSWORD": green.master_password},
        )
        if restored.returncode != 0:
            raise BlueGreenError(f"restoring {file_name} into green failed: {restored.stderr}")


def subscribe(
    subscriber: LocalPostgres, publisher: LocalPostgres, database: str, *, copy_data: bool
) -> None:
    """A subscription on `subscriber` to the publication of every table on `publisher`."""
    with _connect(subscriber, database) as conn:
        conn.execute(
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = {})"
            ).format(
                sql.Identifier(NAME),
                sql.Literal(_conninfo(publisher, database, password=True)),
                sql.Identifier(NAME),
                sql.Literal(copy_data),
            )
        )


def wait_synced(
    subscriber: LocalPostgres, database: str, timeout_s: float = SYNC_TIMEOUT_S
) -> None:
    """Until every table of the subscription has finished its initial copy."""
    deadline = time.monotonic() + timeout_s
    with _connect(subscriber, database) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE srsubstate <> 'r') "
                "FROM pg_subscription_rel"
            ).fetchone()
            if row is not None and row[0] > 0 and row[1] == 0:
                return
            if time.monotonic() > deadline:
                raise BlueGreenError(
                    f"the subscription on port {subscriber.settings.port} has not synced "
                    f"{row[1] if row else '?'} tables after {timeout_s:g} s"
                )
            time.sleep(0.1)


def wait_caught_up(
    publisher: LocalPostgres, database: str, timeout_s: float = CATCH_UP_TIMEOUT_S
) -> float:
    """Until the subscriber confirms everything the publisher has written; the seconds taken."""
    started = time.monotonic()
    with _connect(publisher, database) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        target = str(row[0]) if row else "0/0"
        while True:
            done = conn.execute(
                "SELECT flush_lsn >= %s::pg_lsn FROM pg_stat_replication "
                "WHERE application_name = %s",
                (target, NAME),
            ).fetchone()
            if done is not None and done[0]:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise BlueGreenError(
                    f"the subscriber of port {publisher.settings.port} has not confirmed {target} "
                    f"after {timeout_s:g} s"
                )
            time.sleep(0.01)


def copy_sequences(source: LocalPostgres, target: LocalPostgres, database: str) -> int:
    """Every sequence's last value from `source` to `target`; how many were set."""
    with _connect(source, database) as conn:
        rows = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE last_value IS NOT NULL"
        ).fetchall()
    with _connect(target, database) as conn:
        for schema, name, value in rows:
            conn.execute(
                "SELECT setval(%s::regclass, %s)",
                (sql.Identifier(schema, name).as_string(conn), value),
            )
    return len(rows)


def drop_subscription(subscriber: LocalPostgres, database: str) -> None:
    with _connect(subscriber, database) as conn:
        conn.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(NAME)))


def set_read_only(server: LocalPostgres, read_only: bool) -> None:
    """`default_transaction_read_only` for every session, reloaded at once."""
    with server.connect_admin() as conn:
        if read_only:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")


def terminate_sessions(server: LocalPostgres) -> int:
    """End every client session but this one (PgBouncer's server connections get 57P01)."""
    with server.connect_admin() as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def switchover(
    deployment: GreenDeployment, move_endpoint: Callable[[int], float]
) -> dict[str, float]:
    """Blue read-only, blue's sessions ended, green caught up, sequences copied, endpoint moved.

    `move_endpoint(port)` points the clients' path (the pooler) at green. Returns each step's
    end in seconds from the start of the switchover, and the sessions terminated.
    """
    blue, green, database = deployment.blue, deployment.green, deployment.database
    started = time.monotonic()
    set_read_only(blue, True)
    read_only_at = time.monotonic() - started
    terminated = terminate_sessions(blue)
    terminated_at = time.monotonic() - started
    wait_caught_up(blue, database)
    caught_up_at = time.monotonic() - started
    sequences = copy_sequences(blue, green, database)
    move_endpoint(green.settings.port)
    moved_at = time.monotonic() - started
    # Green is the writer now; replication from blue (read-only, idle) ends.
    drop_subscription(green, database)
    return {
        "read_only_at_s": read_only_at,
        "sessions_terminated": float(terminated),
        "terminated_at_s": terminated_at,
        "caught_up_at_s": caught_up_at,
        "sequences_copied": float(sequences),
        "endpoint_moved_at_s": moved_at,
    }


def switch_back(deployment: GreenDeployment, move_endpoint: Callable[[int], float]) -> None:
    """After the drill: every row back to blue (a fresh copy from green), blue the writer again.

    Only while nothing writes (the storm is over): blue's tables are emptied and copied from
    green by a subscription the other way, sequences follow, the endpoint returns, green goes.
    """
    blue, green, database = deployment.blue, deployment.green, deployment.database
    drop_subscription(green, database)
    set_read_only(blue, False)
    with _connect(blue, database) as conn:
        tables = conn.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
            "WHERE pubname = %s",
            (NAME,),
        ).fetchall()
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.SQL(t[0]) for t in tables))
            )
    with _connect(green, database) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(NAME)))
    subscribe(blue, green, database, copy_data=True)
    wait_synced(blue, database)
    wait_caught_up(green, database)
    drop_subscription(blue, database)
    copy_sequences(green, blue, database)
    move_endpoint(blue.settings.port)
    remove_green(deployment)


def remove_green(deployment: GreenDeployment) -> None:
    deployment.green.stop("immediate")
    shutil.rmtree(deployment.green.root, ignore_errors=True)


def abandon_green(blue: LocalPostgres, root: Path, database: str) -> None:
    """Undo a green that failed half-way: its server and directory, blue's publication."""
    green = LocalPostgres(root, blue.settings, blue.user)
    if green.data_dir.exists():
        green._run("pg_ctl", "-D", str(green.data_dir), "-m", "immediate", "stop", check=False)
    shutil.rmtree(root, ignore_errors=True)
    with _connect(blue, database) as conn:
        for slot in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
            (NAME,),
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot[0],))
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NAME)))
