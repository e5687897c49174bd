"""A real PostgreSQL server for the local target and the tests, started as an unprivileged user.

It plays the RDS instance: the stack's `max_connections`, reserved slots and timeouts, TLS forced
for TCP clients (`rds.force_ssl`), SCRAM passwords, and a master user whose password lives in a
file like the RDS-managed secret.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from slotguard.local.postgres_binaries import runnable_bindir
from slotguard.local.system import (
    ServiceUser,
    ensure_programs,
    hand_over,
    pinned_postgres_major,
    postgres_bindir,
)
from slotguard.local.tls import TlsFiles, ensure_tls

MASTER_USER = "postgres"


@dataclass(frozen=True)
class PostgresServerSettings:
    """The server settings the budget decides, as the parameter group carries them on RDS."""

    port: int
    max_connections: int
    superuser_reserved_connections: int = 3
    idle_in_transaction_session_timeout_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    # The server's major (`database.engine_version`); None: the pinned default.
    major: int | None = None


class MajorMismatchError(RuntimeError):
    """The data directory was made by another PostgreSQL major than the one asked for."""


class LocalPostgres:
    """One PostgreSQL cluster under `root` (data, sockets, TLS, log, master password)."""

    def __init__(
        self, root: Path, settings: PostgresServerSettings, user: ServiceUser | None
    ) -> None:
        self.root = root
        self.settings = settings
        self.user = user
        self.data_dir = root / "pgdata"
        self.socket_dir = root / "run"
        self.log_file = root / "postgres.log"
        self.password_file = root / "master.password"
        self.tls: TlsFiles = ensure_tls(root / "tls")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def major(self) -> int:
        return self.settings.major or pinned_postgres_major()

    def bindir(self) -> Path:
        """The server programs of this cluster's major, runnable by the account it runs as."""
        bindir = postgres_bindir(self.major)
        if bindir is None:
            ensure_programs(postgres_major=self.major)
            bindir = postgres_bindir(self.major)
        assert bindir is not None
        return runnable_bindir(bindir) if self.user is not None else bindir

    def _run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        bindir = self.bindir()
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", **(env or {})}
        libdir = bindir.parent / "lib"
        if (libdir / "libpq.so.5").exists():
            # The server's own libpq for its modules (libpqwalreceiver: replicas, subscriptions);
            # their RUNPATH is the build's prefix, so they would load the system's older one.
            env["LD_LIBRARY_PATH"] = str(libdir)
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
            env["HOME"] = str(self.root)
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            [str(bindir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            **kwargs,
        )

    @property
    def master_password(self) -> str:
        return self.password_file.read_text().strip()

    def init(self, *, sync: bool = True) -> None:
        """Create the cluster once; later calls only rewrite the configuration.

        `sync=False`: initdb skips flushing the new files to disk (a throwaway cluster).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if not self.running():
            # A chain made before it carried key identifiers fails strict clients: replace it.
            self.tls = ensure_tls(self.root / "tls", renew_without_key_ids=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
        version_file = self.data_dir / "PG_VERSION"
        if version_file.exists() and version_file.read_text().strip() != str(self.major):
            raise MajorMismatchError(
                f"{self.data_dir} holds a PostgreSQL {version_file.read_text().strip()} cluster "
                f"but this stack runs PostgreSQL {self.major} (database.engine_version); remove "
                f"{self.root} (its data is lost) or set database.engine_version back"
            )
        if not version_file.exists():
            hand_over(self.root, self.user)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                MASTER_USER,
                "--pwfile",
                str(self.password_file),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                *(() if sync else ("--no-sync",)),
            )
        self.write_config()
        hand_over(self.root, self.user)

    def write_config(self) -> None:
        """Write the stack's server settings and client authentication rules."""
        s = self.settings
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(s.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(s.max_connections),
            "superuser_reserved_connections": str(s.superuser_reserved_connections),
            "password_encryption": "'scram-sha-256'",
            "ssl": "on",
            "ssl_cert_file": f"'{self.tls.server_cert}'",
            "ssl_key_file": f"'{self.tls.server_key}'",
            "ssl_ca_file": f"'{self.tls.ca_cert}'",
            "idle_in_transaction_session_timeout": str(s.idle_in_transaction_session_timeout_ms),
            "shared_buffers": "'64MB'",
            "fsync": "on",
            "logging_collector": "off",
            "log_min_messages": "warning",
            **s.extra,
        }
        conf = "".join(f"{key} = {value}\n" for key, value in lines.items())
        (self.data_dir / "slotguard.conf").write_text(conf)
        main_conf = self.data_dir / "postgresql.conf"
        include = "include = 'slotguard.conf'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write(include)
        # TLS is forced for TCP clients, as rds.force_ssl does; the socket is for local admin.
        # Replication connections (a streaming replica, a logical subscriber) as for any client.
        (self.data_dir / "pg_hba.conf").write_text(
            "local     all all                scram-sha-256\n"
            "hostssl   all all 127.0.0.1/32   scram-sha-256\n"
            "hostssl   replication all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0      reject\n"
        )

    def start(self, timeout_s: int = 30) -> None:
        if self.running():
            return
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(timeout_s),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        return int(pid_file.read_text().splitlines()[0])

    # -- clients -----------------------------------------------------------------------------

    def conninfo(
        self, user: str = MASTER_USER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """A TLS (verify-full) TCP conninfo, as a client inside the VPC would use."""
        pwd = self.master_password if password is None and user == MASTER_USER else password
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.settings.port,
            user=user,
            password=pwd or "",
            dbname=dbname,
            sslmode="verify-full",
            sslrootcert=str(self.tls.ca_cert),
            connect_timeout=5,
        )

    def connect_admin(
        self, dbname: str = "postgres", autocommit: bool = True
    ) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname=dbname), autocommit=autocommit)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.connect_admin() as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
