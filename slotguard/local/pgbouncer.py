"""A real PgBouncer for the local target and the tests, started from the image's own rendering.

The configuration text comes from `pgbouncer.config.render`, the code the container entrypoint
runs, so what is rehearsed here is what runs on ECS (the pinned release: `slotguard.local.system`).
Processes run as the unprivileged service account, one per `processes`, each with its own pid file
and unix socket directory; they start in their own session so the local target can leave them
running after the command that started them exits.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg import sql

from pgbouncer import scram
from pgbouncer.config import (
    ClientTls,
    DatabaseTarget,
    PgBouncerSettings,
    ProcessPaths,
    parse_version,
    render,
)
from pgbouncer.exporter import show_rows
from slotguard.local.ports import free_port
from slotguard.local.postgres import LocalPostgres
from slotguard.local.state import alive, write_private
from slotguard.local.system import (
    ServiceUser,
    ensure_programs,
    hand_over,
    pgbouncer_binary,
    runnable_pgbouncer,
)
from slotguard.local.tls import TlsFiles

ADMIN_USER = "pgbouncer_admin"
STATS_USER = "pgbouncer_stats"
ADMIN_DB = "pgbouncer"


class PgBouncerStartError(RuntimeError):
    """A PgBouncer process exited or never listened; the message carries its log tail."""


def installed_version() -> tuple[int, int]:
    """The (major, minor) of the PgBouncer on this machine."""
    binary = pgbouncer_binary()
    if binary is None:
        ensure_programs()
        binary = pgbouncer_binary()
    assert binary is not None
    out = subprocess.run([str(binary), "--version"], check=True, capture_output=True, text=True)
    return parse_version(out.stdout.splitlines()[0])


def nofile_limit() -> int:
    """The soft file-descriptor limit PgBouncer inherits from this process."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def process_paths(root: Path, processes: int) -> tuple[ProcessPaths, ...]:
    """Per-process pid file and socket directory under `root` (logs go to the console file)."""
    return tuple(
        ProcessPaths(
            pidfile=str(root / f"pgbouncer-{i + 1}.pid"),
            unix_socket_dir=str(root / "run" / str(i + 1)),
        )
        for i in range(processes)
    )


def local_settings(
    root: Path,
    *,
    port: int,
    database_port: int,
    dbname: str,
    tls: TlsFiles,
    processes: int = 1,
    **numbers: object,
) -> PgBouncerSettings:
    """Settings for a pooler on 127.0.0.1 in front of a local PostgreSQL, TLS on both legs.

    `numbers` are any other `PgBouncerSettings` fields (`version` defaults to the installed one).
    """
    numbers.setdefault("version", installed_version())
    return PgBouncerSettings(
        database=DatabaseTarget(
            host="127.0.0.1", port=database_port, dbname=dbname, ca_file=str(tls.ca_cert)
        ),
        auth_file=str(root / "userlist.txt"),
        # The admin console from this machine only, as on ECS (pgbouncer/config.py render_hba).
        hba_file=str(root / "pgbouncer_hba.conf"),
        paths=process_paths(root, processes),
        listen_addr="127.0.0.1",
        listen_port=port,
        processes=processes,
        client_tls=ClientTls(cert_file=str(tls.server_cert), key_file=str(tls.server_key)),
        admin_users=(ADMIN_USER,),
        stats_users=(STATS_USER,),
        fd_limit=nofile_limit(),
        allow_lost_cancels=processes > 1,
        **numbers,  # type: ignore[arg-type]
    )


class LocalPgBouncer:
    """PgBouncer process(es) under `root`, started from rendered settings and SCRAM verifiers."""

    def __init__(
        self,
        root: Path,
        settings: PgBouncerSettings,
        verifiers: Mapping[str, str],
        user: ServiceUser | None,
        tls: TlsFiles,
        *,
        admin_password: str,
    ) -> None:
        self.root = root
        self.settings = settings
        self.verifiers = dict(verifiers)
        self.user = user
        self.tls = tls
        self.admin_password = admin_password
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- files -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.settings.listen_port

    @property
    def auth_file(self) -> Path:
        return Path(self.settings.auth_file)

    def ini_path(self, index: int) -> Path:
        return self.root / f"pgbouncer-{index + 1}.ini"

    def log_path(self, index: int) -> Path:
        return self.root / f"pgbouncer-{index + 1}.log"

    def write_files(self) -> None:
        """Render and write every ini and the auth file (0600, verifiers only)."""
        rendered = render(self.settings, self.verifiers)
        self.root.mkdir(parents=True, exist_ok=True)
        for index, text in enumerate(rendered.ini):
            Path(self.settings.paths[index].unix_socket_dir).mkdir(parents=True, exist_ok=True)
            self.ini_path(index).write_text(text)
        # Owner-only before any byte is written, so the verifiers are never world-readable.
        write_private(self.auth_file, rendered.auth_file)
        if self.settings.hba_file:
            write_private(Path(self.settings.hba_file), rendered.hba)
        hand_over(self.root, self.user)

    # -- lifecycle ---------------------------------------------------------------------------

    def _binary(self) -> Path:
        """The pinned PgBouncer, installed if missing, at a path the service account can run."""
        binary = pgbouncer_binary()
        if binary is None:
            ensure_programs()
            binary = pgbouncer_binary()
        assert binary is not None
        return runnable_pgbouncer(binary, self.user, self.root / "bin")

    def start(self, timeout_s: float = 15.0) -> None:
        """Start every process and wait until each listens on its unix socket."""
        binary = self._binary()
        self.write_files()
        self._procs = [self._spawn(binary, index) for index in range(self.settings.processes)]
        self._wait_listening(timeout_s)

    def _spawn(self, binary: Path, index: int) -> subprocess.Popen[bytes]:
        """One PgBouncer process for slot `index`, as the service account, logging to its file."""
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        with self.log_path(index).open("ab") as log:
            proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
                [str(binary), str(self.ini_path(index))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                **kwargs,
            )
        return proc

    def _socket_file(self, index: int) -> Path:
        return Path(self.settings.paths[index].unix_socket_dir) / f".s.PGSQL.{self.port}"

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for index, proc in enumerate(self._procs):
            self._wait_process(index, proc, deadline, timeout_s)

    def _wait_process(
        self, index: int, proc: subprocess.Popen[bytes], deadline: float, timeout_s: float
    ) -> None:
        """Until the process of slot `index` listens and its pidfile names it; its log if not."""
        while not (self._socket_file(index).exists() and self._pidfile_pid(index) == proc.pid):
            if proc.poll() is not None:
                raise PgBouncerStartError(
                    f"pgbouncer process {index + 1} exited with {proc.returncode}:\n"
                    + self.log_tail(index)
                )
            if time.monotonic() > deadline:
                raise PgBouncerStartError(
                    f"pgbouncer process {index + 1} did not listen within {timeout_s} s:\n"
                    + self.log_tail(index)
                )
            time.sleep(0.02)

    def log_tail(self, index: int = 0, lines: int = 20) -> str:
        path = self.log_path(index)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _pidfile_pid(self, index: int) -> int | None:
        path = Path(self.settings.paths[index].pidfile)
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        """A live PgBouncer: a stale pid file must never make us signal an unrelated process."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        return alive(pid) and b"pgbouncer" in command

    def pids(self) -> list[int]:
        """Pids of the running PgBouncer processes (from their pid files)."""
        pids = []
        for index in range(self.settings.processes):
            pid = self._pidfile_pid(index)
            if pid is not None and self._alive(pid):
                pids.append(pid)
        return pids

    def running(self) -> bool:
        return bool(self.pids())

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self._procs:
                proc.poll()  # reap our own children so they do not linger as zombies
            if not self.pids():
                return True
            time.sleep(0.02)
        return False

    def stop(self, *, safe: bool = False, timeout_s: float = 10.0) -> None:
        """Shut down: immediately (default), or safely (SIGINT: let running transactions end).

        SIGTERM is an immediate shutdown up to 1.22 and a "wait for clients" shutdown from 1.23,
        where a second SIGTERM is immediate; sending it twice is immediate on every version.
        """
        if safe:
            self._signal_all(signal.SIGINT)
            if self._wait_gone(timeout_s):
                self._cleanup()
                return
        self._signal_all(signal.SIGTERM)
        if not self._wait_gone(0.2):
            self._signal_all(signal.SIGTERM)
            if not self._wait_gone(timeout_s):
                self.kill()
                return
        self._cleanup()

    # -- one process at a time: rolling restarts and scaling on the shared port --------------

    def start_process(self, index: int, timeout_s: float = 15.0) -> int:
        """Start the process of slot `index` beside the running ones; its pid once it listens.

        The files must be written (`write_files`) for a settings object covering the slot; with
        `so_reuseport` the kernel spreads new connections over every listening process.
        """
        binary = self._binary()
        with contextlib.suppress(FileNotFoundError):
            Path(self.settings.paths[index].pidfile).unlink()
        proc = self._spawn(binary, index)
        self._procs.append(proc)
        self._wait_process(index, proc, time.monotonic() + timeout_s, timeout_s)
        return int(proc.pid)

    def process_pid(self, index: int) -> int | None:
        """The live process of slot `index`, if any."""
        pid = self._pidfile_pid(index)
        return pid if pid is not None and self._alive(pid) else None

    def stop_process(self, index: int, *, drain_timeout_s: float) -> tuple[float, bool]:
        """Stop slot `index` as the ECS task's entrypoint does: SIGINT, then immediate.

        SIGINT is PgBouncer's safe shutdown (running transactions finish, then each client is
        disconnected); past `drain_timeout_s` two SIGTERMs stop it at once. Returns the seconds
        it took and whether the safe shutdown finished in time.
        """
        pid = self.process_pid(index)
        if pid is None:
            return 0.0, True
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        clean = self._wait_pid_gone(pid, drain_timeout_s)
        if not clean:
            for _ in range(2):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                time.sleep(0.1)
            if not self._wait_pid_gone(pid, 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_pid_gone(pid, 5.0)
        with contextlib.suppress(FileNotFoundError):
            Path(self.settings.paths[index].pidfile).unlink()
        return time.monotonic() - started, clean

    def _wait_pid_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self._procs:
                proc.poll()  # reap our own children
            if not self._alive(pid):
                return True
            time.sleep(0.02)
        return not self._alive(pid)

    def reload_running(self) -> None:
        """SIGHUP every live process of every slot: they re-read `[peers]` and the auth file."""
        for index in range(self.settings.processes):
            pid = self.process_pid(index)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL every process: the pooler task dying, for fault drills."""
        self._signal_all(signal.SIGKILL)
        self._wait_gone(5.0)
        self._cleanup()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again with the same files."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def reload(
        self,
        settings: PgBouncerSettings | None = None,
        verifiers: Mapping[str, str] | None = None,
    ) -> None:
        """Re-render (optionally with new settings/verifiers) and SIGHUP every process."""
        if settings is not None:
            if settings.processes != self.settings.processes:
                raise ValueError("reload cannot change processes; restart instead")
            self.settings = settings
        if verifiers is not None:
            self.verifiers = dict(verifiers)
        self.write_files()
        self._signal_all(signal.SIGHUP)

    def _cleanup(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._procs = []
        for paths in self.settings.paths:
            with contextlib.suppress(FileNotFoundError):
                Path(paths.pidfile).unlink()

    # -- clients -----------------------------------------------------------------------------

    def conninfo(
        self,
        user: str,
        password: str,
        dbname: str | None = None,
        *,
        connect_timeout: int = 10,
        **extra: str | int,
    ) -> str:
        """A TCP conninfo through the pooler, TLS verified (verify-full) against the local CA."""
        return psycopg.conninfo.make_conninfo(
            "",
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            dbname=dbname or self.settings.database.client_name,
            sslmode="verify-full",
            sslrootcert=str(self.tls.ca_cert),
            connect_timeout=connect_timeout,
            **extra,
        )

    def admin_conninfo(self, process: int = 0, *, user: str = ADMIN_USER) -> str:
        """The admin console of one process, over its own unix socket (TCP would land on any)."""
        return psycopg.conninfo.make_conninfo(
            host=self.settings.paths[process].unix_socket_dir,
            port=self.port,
            user=user,
            password=self.admin_password,
            dbname=ADMIN_DB,
            connect_timeout=5,
        )

    def admin_conninfos(self, *, user: str = ADMIN_USER) -> list[str]:
        return [self.admin_conninfo(i, user=user) for i in range(self.settings.processes)]

    def connect_admin(self, process: int = 0) -> psycopg.Connection[tuple[object, ...]]:
        """An admin-console connection: simple query protocol only, hence a ClientCursor."""
        return psycopg.connect(
            self.admin_conninfo(process), autocommit=True, cursor_factory=psycopg.ClientCursor
        )

    def show(self, what: str, process: int = 0) -> list[dict[str, object]]:
        """`SHOW <what>` on the admin console, as dicts (e.g. show("POOLS"))."""
        if not what.replace("_", "").isalpha():
            raise ValueError(f"SHOW {what!r} is not an admin console command")
        with self.connect_admin(process) as conn, conn.cursor() as cur:
            return show_rows(cur, f"SHOW {what}")


def install_role_verifiers(
    admin: psycopg.Connection[tuple[object, ...]],
    users: Mapping[str, str],
    *,
    create: bool = True,
    iterations: int = scram.DEFAULT_ITERATIONS,
) -> dict[str, str]:
    """Make each role's stored SCRAM verifier the one the auth file will hold.

    SCRAM pass-through needs the pooler's verifier and the database's to be the same string. A
    role whose stored verifier already matches its password keeps it (nothing changes); otherwise
    the role gets a freshly computed verifier (created with LOGIN when missing and `create`).
    `admin` must be a superuser connection (it reads pg_authid).
    """
    result: dict[str, str] = {}
    for role, password in users.items():
        row = admin.execute(
            "select rolpassword from pg_authid where rolname = %s", (role,)
        ).fetchone()
        stored = row[0] if row else None
        if (
            isinstance(stored, str)
            and stored.startswith("SCRAM-SHA-256$")
            and scram.parse(stored).iterations == iterations
            and scram.matches(password, stored)
        ):
            result[role] = stored
            continue
        verifier = scram.make_verifier(password, iterations=iterations)
        ident = sql.Identifier(role)
        literal = sql.Literal(verifier)
        if row is None:
            if not create:
                raise ValueError(f"role {role!r} does not exist on the database")
            admin.execute(sql.SQL("create role {} login password {}").format(ident, literal))
        else:
            admin.execute(sql.SQL("alter role {} password {}").format(ident, literal))
        result[role] = verifier
    return result


def admin_verifiers(admin_password: str) -> dict[str, str]:
    """Auth-file entries for the console users (they exist only in PgBouncer, not the database)."""
    verifier = scram.make_verifier(admin_password)
    return {ADMIN_USER: verifier, STATS_USER: verifier}


def create_local_pgbouncer(
    root: Path,
    postgres: LocalPostgres,
    *,
    users: Mapping[str, str],
    port: int | None = None,
    dbname: str = "postgres",
    processes: int = 1,
    create_roles: bool = True,
    scram_iterations: int = scram.DEFAULT_ITERATIONS,
    **numbers: object,
) -> LocalPgBouncer:
    """A (not yet started) pooler in front of `postgres`, its roles' verifiers installed.

    `users` maps role -> password; `numbers` are `PgBouncerSettings` fields. The console password
    is kept in `root/admin.password` (0600) like the server's master password, so a later command
    can read the pooler's figures.
    """
    root.mkdir(parents=True, exist_ok=True)
    settings = local_settings(
        root,
        port=port or free_port(),
        database_port=postgres.settings.port,
        dbname=dbname,
        tls=postgres.tls,
        processes=processes,
        **numbers,
    )
    with postgres.connect_admin() as admin:
        verifiers = install_role_verifiers(
            admin, users, create=create_roles, iterations=scram_iterations
        )
    password_file = root / "admin.password"
    if not password_file.exists():
        write_private(password_file, secrets.token_urlsafe(18))
    admin_password = password_file.read_text().strip()
    return LocalPgBouncer(
        root,
        settings,
        {**verifiers, **admin_verifiers(admin_password)},
        postgres.user,
        postgres.tls,
        admin_password=admin_password,
    )


def with_processes(settings: PgBouncerSettings, root: Path, processes: int) -> PgBouncerSettings:
    """The same settings run by a different number of processes (paths follow)."""
    return replace(
        settings,
        processes=processes,
        paths=process_paths(root, processes),
        allow_lost_cancels=processes > 1,
    )
