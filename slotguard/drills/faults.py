"""The faults a drill injects into a running local stack, each one real.

The stack's processes belong to its supervisor, but everything needed to act on them lives in
the stack's state directory: PgBouncer's pid files, ini files and auth file, PostgreSQL's data
directory, the secrets in the local Secrets Manager. A `StackHandle` rebuilds the same objects the
supervisor holds (`LocalPostgres`, `LocalPgBouncer`) from that state and acts through them, so a
fault is exactly what an operator (or a crash) would do to the running stack.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from functions.rotation import clone_role, other_user
from pgbouncer import scram
from slotguard.local.pgbouncer import LocalPgBouncer
from slotguard.local.postgres import LocalPostgres
from slotguard.local.runtime import RuntimeAdminClient
from slotguard.local.stack import (
    APP_ROLE_SECRET,
    StackPlan,
    master_conninfo,
    pgbouncer_settings,
    postgres_server,
)
from slotguard.local.state import STACK_MARKER_ENV, StackRecord, write_private
from slotguard.local.system import service_user
from slotguard.storm.client import lambda_client

# How long the post-rotation login may wait for every PgBouncer process to reload.
PRIME_TIMEOUT_S = 10.0


def read_auth_file(path: Path) -> dict[str, str]:
    """PgBouncer's auth file back into {user: verifier} (fields quoted, `""` escapes `"`)."""
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = []
        rest = line.strip()
        while rest.startswith('"'):
            end = 1
            value = []
            while end < len(rest):
                if rest[end] == '"' and rest[end + 1 : end + 2] == '"':
                    value.append('"')
                    end += 2
                elif rest[end] == '"':
                    break
                else:
                    value.append(rest[end])
                    end += 1
            fields.append("".join(value))
            rest = rest[end + 1 :].strip()
        if len(fields) >= 2:
            entries[fields[0]] = fields[1]
    return entries


@dataclass
class StackHandle:
    """A running local stack seen from outside its supervisor."""

    plan: StackPlan
    record: StackRecord

    @property
    def app_user(self) -> str:
        return self.plan.budget.app_user.name

    @property
    def schema(self) -> str:
        return self.plan.budget.app_user.schema_name

    def lambda_client(self, pool_size: int = 50) -> Any:
        return lambda_client(
            endpoint_url=self.record.runtime_url,
            region_name=self.record.region,
            pool_size=pool_size,
            read_timeout_s=120,
        )

    def runtime_admin(self) -> RuntimeAdminClient:
        return RuntimeAdminClient(self.record.runtime_url, timeout_s=120)

    def master_conninfo(self, dbname: str | None = None) -> str:
        base = master_conninfo(self.record)
        return psycopg.conninfo.make_conninfo(base, dbname=dbname or self.record.database)

    def postgres(self) -> LocalPostgres:
        return postgres_server(self.plan, self.record.ports, service_user())

    def pgbouncer(self) -> LocalPgBouncer:
        """The stack's PgBouncer processes, with the auth file they run with now."""
        paths = self.plan.paths
        tls = self.postgres().tls
        settings = pgbouncer_settings(self.plan, self.record.ports, tls)
        verifiers = read_auth_file(Path(settings.auth_file))
        return LocalPgBouncer(
            paths.pgbouncer,
            settings,
            verifiers,
            service_user(),
            tls,
            admin_password=self.record.pgbouncer_admin_password,
        )

    def secrets_client(self) -> Any:
        return boto3.client(
            "secretsmanager",
            endpoint_url=self.record.aws_url,
            region_name=self.record.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the local moto server takes any
        )

    def app_secret(self) -> dict[str, Any]:
        arn = self.record.secret_arns[APP_ROLE_SECRET]
        value: dict[str, Any] = json.loads(
            self.secrets_client().get_secret_value(SecretId=arn)["SecretString"]
        )
        return value

    def app_conninfo(self) -> str:
        """app_user through the pooler, with the secret's current password."""
        secret = self.app_secret()
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.record.ports.pgbouncer,
            user=secret["username"],
            password=secret["password"],
            dbname=self.record.database,
            sslmode="verify-full",
            sslrootcert=self.record.ca_file,
            connect_timeout=5,
            application_name="slotguard-drill",
        )


# -- the faults ----------------------------------------------------------------------------------


def restart_postgres(handle: StackHandle) -> dict[str, float]:
    """Fast shutdown (running transactions rolled back, sessions cut), then start.

    Returns the seconds each half took and `down_at`, the epoch when the server was down.
    """
    server = handle.postgres()
    started = time.monotonic()
    server.stop("fast")
    stopped = time.monotonic()
    down_at = time.time()
    server.start()
    return {"stop_s": stopped - started, "start_s": time.monotonic() - stopped, "down_at": down_at}


def restart_pgbouncer(handle: StackHandle, *, kill: bool) -> dict[str, float]:
    """Graceful (SIGINT: running transactions finish, then exit) or SIGKILL, then start again."""
    pooler = handle.pgbouncer()
    started = time.monotonic()
    if kill:
        pooler.kill()
    else:
        pooler.stop(safe=True, timeout_s=10)
    stopped = time.monotonic()
    down_at = time.time()
    marker = os.environ.get(STACK_MARKER_ENV)
    os.environ[STACK_MARKER_ENV] = str(handle.plan.paths.root)
    try:
        pooler.start()
    finally:
        if marker is None:
            os.environ.pop(STACK_MARKER_ENV, None)
        else:
            os.environ[STACK_MARKER_ENV] = marker
    return {"stop_s": stopped - started, "start_s": time.monotonic() - stopped, "down_at": down_at}


def rotate_app_password(handle: StackHandle) -> dict[str, float]:
    """Rotate app_user's credentials the way the AWS stack does: alternating users.

    `infra.rotation.ROTATION_STEPS`, in order: the user the secret does not name (app_user_clone
    on the first rotation, cloned now as AWS's rotation function does) gets its new password;
    the pooler gets its verifier and every process is confirmed to accept it (on AWS: the ECS
    rollout completes); only then the secret names it. Nothing any client uses changes, so no
    login can fail. Returns the seconds of each step.
    """
    password = secrets.token_urlsafe(18)
    verifier = scram.make_verifier(password)
    arn = handle.record.secret_arns[APP_ROLE_SECRET]
    secret = handle.app_secret()
    current = str(secret["username"])
    target = other_user(current, handle.app_user)
    started = time.monotonic()
    # 1. the inactive user's new password (cloned first, on the first rotation)
    with psycopg.connect(handle.master_conninfo(), autocommit=True) as admin:
        clone_role(admin, handle.app_user)
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(target), sql.Literal(verifier)
            )
        )
    role_set = time.monotonic()
    # 2. the pooler's auth file, reloaded, and one login per process as that user
    pooler = handle.pgbouncer()
    pooler.reload(verifiers={**pooler.verifiers, target: verifier})
    prime_pass_through(handle, pooler, password, user=target)
    pooler_ready = time.monotonic()
    # 3. only now the functions' secret names it
    handle.secrets_client().put_secret_value(
        SecretId=arn,
        SecretString=json.dumps(
            {**secret, "username": target, "password": password, "scram_verifier": verifier}
        ),
    )
    # The stack's own record of app_user's password, so a later `up` installs the rotated one
    # (the clone's lives in the secret only: a new `up` names app_user again).
    passwords = handle.plan.paths.root / "passwords.json"
    if target == handle.app_user and passwords.exists():
        stored = json.loads(passwords.read_text())
        stored["app"] = password
        write_private(passwords, json.dumps(stored))
    done = time.monotonic()
    return {
        "rotate_s": done - started,
        "role_s": role_set - started,
        "pooler_s": pooler_ready - role_set,
        "secret_s": done - pooler_ready,
    }


def prime_pass_through(
    handle: StackHandle, pooler: LocalPgBouncer, password: str, user: str | None = None
) -> None:
    """Log in once with the new password on every PgBouncer process, over its own socket.

    With SCRAM pass-through PgBouncer logs into the database with the ClientKey/ServerKey of the
    last client that authenticated, not from the auth file. After a rotation those keys stay the
    old password's until some client logs in with the new one, and warm function instances keep
    their old connections: the next new server connection (server_idle_timeout, a restart) then
    fails, `server_login_retry` holds the pool, and waiting clients get `query_wait_timeout`.
    One login per process right after the reload installs the new keys at once.
    """
    for paths in pooler.settings.paths:
        conninfo = psycopg.conninfo.make_conninfo(
            host=paths.unix_socket_dir,
            port=pooler.port,
            user=user or handle.app_user,
            password=password,
            dbname=handle.record.database,
            connect_timeout=5,
            application_name="slotguard-rotation",
        )
        # SIGHUP is handled asynchronously: until the process has re-read the auth file the new
        # password is refused, so the login is retried for a few seconds.
        for attempt in Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            stop=stop_after_delay(PRIME_TIMEOUT_S),
            wait=wait_fixed(0.05),
            reraise=True,
        ):
            with attempt:
                psycopg.connect(conninfo, autocommit=True).close()


@dataclass
class IdleTransaction:
    """A client that opened a transaction as app_user through the pooler and went quiet."""

    opened_at: float
    ended_at: float | None = None
    sqlstate: str | None = None
    message: str = ""


def hold_idle_transactions(handle: StackHandle, count: int, wait_s: float) -> list[IdleTransaction]:
    """Open `count` transactions, go idle, and note when and how the server ends each one."""
    results: list[IdleTransaction] = []
    threads = []

    def one() -> None:
        conn = psycopg.connect(handle.app_conninfo(), autocommit=True)
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        held = IdleTransaction(opened_at=time.time())
        results.append(held)
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([conn.fileno()], [], [], 0.05)
                if readable:
                    break
            held.ended_at = time.time()
            try:
                conn.execute("SELECT 1")
                held.ended_at = None  # still alive: nothing ended it
            except psycopg.Error as exc:
                held.sqlstate = exc.sqlstate
                held.message = " ".join(str(exc).split())[:200]
        finally:
            conn.close()

    for _ in range(count):
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(wait_s + 10)
    return results
