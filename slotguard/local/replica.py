"""A streaming replica of a local PostgreSQL, started on the fly and promoted on demand.

It plays a Multi-AZ standby or an Aurora reader locally: `pg_basebackup -R` copies the running
primary into its own directory (same server settings, same TLS chain and master password, so
clients verifying the primary's CA reach it too), it starts as a hot standby streaming from the
primary, and `promote()` makes it the writer. Any `LocalPostgres` can get one; nothing in the
stack's settings is needed.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import psycopg

from slotguard.local.postgres import LocalPostgres
from slotguard.local.system import ServiceUser, hand_over

# How long a replica may take to connect to its primary and stream.
STREAMING_TIMEOUT_S = 30.0


class ReplicaError(RuntimeError):
    """The replica could not be made, did not stream or did not catch up; says which."""


def share_identity(primary: LocalPostgres, root: Path) -> None:
    """Give `root` the primary's TLS chain and master password (one cluster, one identity)."""
    (root / "tls").mkdir(parents=True, exist_ok=True)
    for source in (primary.tls.ca_cert, primary.tls.server_cert, primary.tls.server_key):
        target = root / "tls" / source.name
        if not target.exists():
            shutil.copy2(source, target)
    if not (root / primary.password_file.name).exists():
        shutil.copy2(primary.password_file, root / primary.password_file.name)


def allow_replication(primary: LocalPostgres) -> None:
    """Rewrite the primary's access rules (they admit replication) and reload them."""
    primary.write_config()
    hand_over(primary.data_dir, primary.user)
    with primary.connect_admin() as conn:
        conn.execute("SELECT pg_reload_conf()")


def start_streaming_replica(
    primary: LocalPostgres, root: Path, port: int, *, user: ServiceUser | None = None
) -> LocalPostgres:
    """Copy the running `primary` into `root` with `pg_basebackup -R` and start it streaming."""
    root.mkdir(parents=True, exist_ok=True)
    share_identity(primary, root)
    replica = LocalPostgres(
        root, dataclasses.replace(primary.settings, port=port), user or primary.user
    )
    replica.stop("immediate")
    if replica.data_dir.exists():
        shutil.rmtree(replica.data_dir)
    replica.socket_dir.mkdir(exist_ok=True)
    hand_over(root, replica.user)
    allow_replication(primary)
    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=primary.settings.port,
        user="postgres",
        sslmode="verify-full",
        sslrootcert=str(primary.tls.ca_cert),
        application_name=root.name,
    )
    result = replica._run(
        "pg_basebackup",
        "--pgdata",
        str(replica.data_dir),
        "--write-recovery-conf",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-password",
        "--dbname",
        conninfo,
        check=False,
        env={"PGPASSWORD": primary.master_password},
    )
    if result.returncode != 0:
        raise ReplicaError(
            f"pg_basebackup from port {primary.settings.port} failed: {result.stderr}"
        )
    replica.init()  # its own port, sockets and TLS paths over the copied configuration
    try:
        replica.start()
        replica.wait_ready()
        wait_streaming(primary, root.name)
    except BaseException:
        replica.stop("immediate")
        raise
    return replica


def wait_streaming(
    primary: LocalPostgres, application_name: str, timeout_s: float = STREAMING_TIMEOUT_S
) -> None:
    """Until the primary lists the standby `application_name` as streaming."""
    deadline = time.monotonic() + timeout_s
    while True:
        with primary.connect_admin() as conn:
            row = conn.execute(
                "SELECT state FROM pg_stat_replication WHERE application_name = %s",
                (application_name,),
            ).fetchone()
        if row is not None and row[0] == "streaming":
            return
        if time.monotonic() > deadline:
            raise ReplicaError(
                f"standby {application_name} is not streaming from port {primary.settings.port} "
                f"after {timeout_s:g} s (state {row[0] if row else 'absent'})"
            )
        time.sleep(0.05)


def wait_caught_up(
    primary: LocalPostgres, application_name: str, timeout_s: float = STREAMING_TIMEOUT_S
) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    deadline = time.monotonic() + timeout_s
    with primary.connect_admin() as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        while True:
            row = conn.execute(
                "SELECT replay_lsn >= %s::pg_lsn FROM pg_stat_replication "
                "WHERE application_name = %s",
                (str(target[0]) if target else "0/0", application_name),
            ).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > deadline:
                raise ReplicaError(
                    f"standby {application_name} has not caught up in {timeout_s:g} s"
                )
            time.sleep(0.02)


def in_recovery(server: LocalPostgres) -> bool:
    with server.connect_admin() as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def promote(replica: LocalPostgres, timeout_s: int = 30) -> float:
    """Make the standby the writer (`pg_ctl promote -w`); the seconds it took."""
    started = time.monotonic()
    replica._run("pg_ctl", "-D", str(replica.data_dir), "-w", "-t", str(timeout_s), "promote")
    return time.monotonic() - started


def take_over_data(source: LocalPostgres, target: LocalPostgres) -> None:
    """Move the stopped `source`'s data directory into the stopped `target`'s place.

    After a failover the promoted replica holds every committed row and the old writer's copy is
    behind: the promoted data becomes the target's (its own port, sockets and TLS written over
    the moved configuration), and the old copy is deleted. Both servers must be stopped.
    """
    if source.running() or target.running():
        raise ReplicaError("stop both servers before moving a data directory")
    if target.data_dir.exists():
        shutil.rmtree(target.data_dir)
    source.data_dir.rename(target.data_dir)
    target.init()


def remove(server: LocalPostgres) -> None:
    """Stop a replica made here and delete its directory."""
    server.stop("immediate")
    shutil.rmtree(server.root, ignore_errors=True)
