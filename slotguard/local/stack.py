"""The local target: one stack's budget rendered into real processes on this machine.

`LocalStack.start()` brings up, in order, what `pulumi up` creates on AWS: the database (PostgreSQL
with the budget's server settings), the AWS APIs the functions call (a moto server standing in for
Secrets Manager and CloudWatch, holding the same secrets), the functions (the local Lambda runtime
with the budget's environment), the bootstrap (the real handler, invoked through the runtime), the
pooler (PgBouncer from the image's own rendering, tasks x processes processes sharing one port with
so_reuseport, the local stand-in for the NLB over the tasks). It runs inside the supervisor
process, which keeps it running; `stop()` undoes it in reverse.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from infra.budget import Budget, compute_budget
from infra.handlers import check_handlers
from infra.settings import StackSettings, load_stack
from pgbouncer import scram
from pgbouncer.config import PgBouncerSettings, UserPool
from slotguard.local.cluster import pgbouncer_cluster_fields
from slotguard.local.drift import settings_digest, settings_document
from slotguard.local.pgbouncer import (
    STATS_USER,
    LocalPgBouncer,
    admin_verifiers,
    local_settings,
)
from slotguard.local.postgres import MASTER_USER, LocalPostgres, PostgresServerSettings
from slotguard.local.replica import remove, start_streaming_replica
from slotguard.local.runtime import FunctionSpec, Registry, RuntimeSettings
from slotguard.local.state import (
    KIT_ROOT,
    STACK_MARKER_ENV,
    Ports,
    StackPaths,
    StackRecord,
    alive,
    read_pid,
    write_private,
)
from slotguard.local.system import ServiceUser, service_user
from slotguard.local.tls import TlsFiles
from slotguard.storm.client import lambda_client

# Keys of the secrets (names, not values).
APP_ROLE_SECRET = "app-user"  # noqa: S105
MIGRATOR_SECRET = "migrator"  # noqa: S105
MASTER_SECRET = "master"  # noqa: S105
# A workload's role secret is `workload-<name>` (the default workload's is APP_ROLE_SECRET).
WORKLOAD_SECRET_PREFIX = "workload-"  # noqa: S105
BOOTSTRAP = "bootstrap"
# The storm's extra wirings: the same API wired straight to PostgreSQL, with and without the
# helper's retries, and a probe that holds its connection for a chosen query duration.
DIRECT_SUFFIX = "-direct"
NAIVE_SUFFIX = "-naive"
NORETRY_SUFFIX = "-noretry"
PROBE = "probe"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class StackStartError(RuntimeError):
    """A part of the stack did not come up; the message says which and shows its log."""


@dataclass(frozen=True)
class StackPlan:
    """A stack's settings and budget and where its state lives."""

    stack: str
    settings: StackSettings
    budget: Budget
    paths: StackPaths
    project_dir: Path

    @classmethod
    def load(
        cls, stack: str, project_dir: Path | None = None, base: Path | None = None
    ) -> StackPlan:
        project = project_dir or KIT_ROOT
        settings = load_stack(stack, project)
        budget = compute_budget(settings)
        check_handlers(settings)
        if budget.pgbouncer is None:
            raise StackStartError(
                f"stack {stack}: pooler.kind is {budget.pooler_kind}; the local target rehearses "
                "the PgBouncer pooler only (RDS Proxy exists on AWS alone): set pooler.kind to "
                "pgbouncer in a stack used with `slotguard up`"
            )
        return cls(stack, settings, budget, StackPaths(stack, base), project)

    @property
    def region(self) -> str:
        return self.settings.region or "us-east-1"

    @property
    def settings_hash(self) -> str:
        """The hash of the resolved settings, kept in the running stack's record."""
        return settings_digest(settings_document(self.settings))


def postgres_server(plan: StackPlan, ports: Ports, user: ServiceUser | None) -> LocalPostgres:
    """PostgreSQL as the parameter group configures RDS: the budget's numbers, TLS forced."""
    b = plan.budget
    return LocalPostgres(
        plan.paths.postgres,
        PostgresServerSettings(
            port=ports.postgres,
            max_connections=b.max_connections,
            superuser_reserved_connections=b.reserved_connections,
            idle_in_transaction_session_timeout_ms=b.database_idle_in_transaction_ms,
            major=plan.settings.database.engine_major,
        ),
        user,
    )


def pgbouncer_settings(plan: StackPlan, ports: Ports, tls: TlsFiles) -> PgBouncerSettings:
    """The budget's per-process numbers; every task's processes run here on one port."""
    pb = plan.budget.pgbouncer
    assert pb is not None
    return local_settings(
        plan.paths.pgbouncer,
        port=ports.pgbouncer,
        database_port=ports.postgres,
        dbname=plan.settings.database.name,
        tls=tls,
        processes=pb.processes,
        default_pool_size=plan.budget.default_pool_size,
        reserve_pool_size=pb.reserve_pool,
        reserve_pool_timeout_s=pb.reserve_pool_timeout_s,
        max_db_connections=pb.max_db_connections,
        max_client_conn=pb.max_client_conn,
        listen_backlog=pb.listen_backlog,
        query_wait_timeout_s=pb.query_wait_timeout_s,
        client_idle_timeout_s=pb.client_idle_timeout_s,
        server_idle_timeout_s=pb.server_idle_timeout_s,
        server_lifetime_s=pb.server_lifetime_s,
        server_connect_timeout_s=pb.server_connect_timeout_s,
        idle_transaction_timeout_s=pb.idle_transaction_timeout_s,
        tcp_keepidle_s=pb.tcp_keepalive_idle_s,
        tcp_keepintvl_s=pb.tcp_keepalive_interval_s,
        tcp_keepcnt=pb.tcp_keepalive_count,
        max_prepared_statements=pb.max_prepared_statements,
        user_pools=user_pools(plan.budget),
        # Aurora: the read pool (on the local reader, a streaming replica) and failover.
        **pgbouncer_cluster_fields(plan.budget, reader_port=ports.reader or ports.postgres),
    )


def user_pools(budget: Budget) -> tuple[UserPool, ...]:
    """The workloads' own pools, as PgBouncer's `[users]` section takes them."""
    return tuple(
        UserPool(
            user=w.role,
            pool_size=w.pool_size,
            max_user_connections=w.max_user_connections or w.pool_size,
            idle_transaction_timeout_s=w.idle_transaction_timeout_s,
        )
        for w in budget.workloads.values()
        if w.pool_size is not None
    )


def function_secret_key(budget: Budget, function: str) -> str:
    """The secret a function reads its role's credentials from: its workload's."""
    workload = budget.functions[function].workload
    if workload in budget.workloads:
        return WORKLOAD_SECRET_PREFIX + workload
    return APP_ROLE_SECRET


def function_specs(
    plan: StackPlan, ports: Ports, arns: dict[str, str], ca_file: Path
) -> list[FunctionSpec]:
    """The stack's functions with the budget's environment, plus the storm's comparison wirings."""
    aws = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports.aws}",
        **LOCAL_CREDENTIALS,
        STACK_MARKER_ENV: str(plan.paths.root),
    }
    database = {
        "DB_HOST": "127.0.0.1",
        "DB_NAME": plan.settings.database.name,
        "DB_SECRET_ARN": arns[APP_ROLE_SECRET],
        "DB_SSLROOTCERT": str(ca_file),
        "HEALTH_ALARM_PERCENT": str(plan.settings.alarms.critical_percent),
    }
    specs: list[FunctionSpec] = []
    for name, fn in plan.settings.functions.items():
        env = {**aws, **database, **plan.budget.function_environment(name)}
        env["DB_SECRET_ARN"] = arns[function_secret_key(plan.budget, name)]
        env["DB_PORT"] = str(ports.pgbouncer)
        specs.append(
            FunctionSpec(
                name=name,
                handler=fn.handler,
                code_dir=KIT_ROOT,
                environment=env,
                timeout_s=fn.timeout_s,
                memory_mb=fn.memory_mb,
                reserved_concurrency=fn.reserved_concurrency,
            )
        )
    specs += comparison_variants(specs, ports)
    specs.append(
        FunctionSpec(
            name=BOOTSTRAP,
            handler="functions.bootstrap.handler",
            code_dir=KIT_ROOT,
            environment={
                **aws,
                "MASTER_SECRET_ARN": arns[MASTER_SECRET],
                "APP_USER_SECRET_ARN": arns[APP_ROLE_SECRET],
                "MIGRATOR_SECRET_ARN": arns[MIGRATOR_SECRET],
                **workload_secrets_environment(plan.budget, arns),
                "DB_HOST": "127.0.0.1",
                "DB_PORT": str(ports.postgres),
                "DB_SSLMODE": "verify-full",
                "DB_SSLROOTCERT": str(ca_file),
                "DB_CONNECT_TIMEOUT_S": "10",
                # As on AWS: the budget's settings in the function's configuration.
                "BOOTSTRAP_CONFIG": json.dumps(
                    plan.budget.bootstrap_event(plan.settings.database.name),
                    sort_keys=True,
                    separators=(",", ":"),
                ),
            },
            timeout_s=300,
            memory_mb=512,
            reserved_concurrency=1,
        )
    )
    return specs


def workload_secrets_environment(budget: Budget, arns: dict[str, str]) -> dict[str, str]:
    """The bootstrap's `WORKLOAD_SECRET_ARN_<ROLE>`: each workload role's secret."""
    return {
        f"WORKLOAD_SECRET_ARN_{w.role.upper()}": arns[WORKLOAD_SECRET_PREFIX + w.name]
        for w in budget.workloads.values()
    }


def comparison_variants(functions: list[FunctionSpec], ports: Ports) -> list[FunctionSpec]:
    """Every function's storm variants (no retries, direct, naive) and the probe's, started lazily.

    Derived from each function the stack has, so `slotguard storm --function NAME` compares the
    wirings of any of them; a variant's worker starts only when a storm first uses it.
    """
    probe_code = Path(__file__).resolve().parent
    first = functions[0]
    variants: list[tuple[str, FunctionSpec, str, Path]] = []
    for spec in [*functions, first.model_copy(update={"name": PROBE})]:
        is_probe = spec.name == PROBE
        handler, code_dir = (
            ("probe.hold.handler", probe_code) if is_probe else (spec.handler, spec.code_dir)
        )
        variants += [
            (spec.name + NORETRY_SUFFIX, spec, handler, code_dir),
            (spec.name + DIRECT_SUFFIX, spec, handler, code_dir),
            (spec.name + NAIVE_SUFFIX, spec, handler, code_dir),
        ]
        if is_probe:
            variants.append((PROBE, spec, handler, code_dir))
    out = []
    for name, spec, handler, code_dir in variants:
        env = dict(spec.environment)
        if name.endswith((DIRECT_SUFFIX, NAIVE_SUFFIX)):
            env["DB_PORT"] = str(ports.postgres)
        if name.endswith((NORETRY_SUFFIX, NAIVE_SUFFIX)):
            env["DB_RETRIES"] = "off"
        out.append(
            spec.model_copy(
                update={
                    "name": name,
                    "handler": handler,
                    "code_dir": code_dir,
                    "environment": env,
                    "lazy": True,
                }
            )
        )
    return out


def raise_nofile_limit() -> int:
    """Raise this process's soft file-descriptor limit to the hard one (PgBouncer inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise StackStartError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - a loopback http URL
                return
        except urllib.error.HTTPError:
            return  # it answered: it is serving
        except OSError:
            if time.monotonic() > deadline:
                raise StackStartError(
                    f"{what} did not answer on {url} within {timeout_s:.0f} s:\n{_tail(log)}"
                ) from None
            time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalStack:
    """Start and stop the processes of one stack (run inside the supervisor)."""

    def __init__(self, plan: StackPlan) -> None:
        self.plan = plan
        self.paths = plan.paths
        # An Aurora stack's reader: a streaming replica of the local server, on its own port.
        has_reader = plan.budget.read_pool is not None
        self.ports = self.paths.with_reader_port() if has_reader else self.paths.ports()
        self.reader: LocalPostgres | None = None
        self.user = service_user()
        self.postgres = postgres_server(plan, self.ports, self.user)
        self.pgbouncer: LocalPgBouncer | None = None
        self.aws_proc: subprocess.Popen[bytes] | None = None
        self.runtime_proc: subprocess.Popen[bytes] | None = None
        self.aws_url = f"http://127.0.0.1:{self.ports.aws}"
        self.runtime_url = f"http://127.0.0.1:{self.ports.runtime}"

    # -- start -------------------------------------------------------------------------------

    def start(self, log: Any = print) -> StackRecord:
        os.environ[STACK_MARKER_ENV] = str(self.paths.root)
        raise_nofile_limit()
        log(
            f"postgres: max_connections {self.plan.budget.max_connections} on {self.ports.postgres}"
        )
        self._start_postgres()
        if self.ports.reader is not None and self.plan.budget.read_pool is not None:
            log(f"reader: streaming replica on {self.ports.reader} (the read pool's server)")
            self.reader = start_streaming_replica(
                self.postgres, self.paths.reader, self.ports.reader, user=self.user
            )
        log(f"aws: Secrets Manager and CloudWatch on {self.aws_url}")
        self._start_aws()
        passwords = self._passwords()
        arns = self._put_secrets(passwords)
        specs = function_specs(self.plan, self.ports, arns, self.postgres.tls.ca_cert)
        log(f"runtime: {len(specs)} functions on {self.runtime_url}")
        self._start_runtime(specs)
        log("bootstrap: roles, grants and migrations through functions.bootstrap.handler")
        self._bootstrap()
        pb = self.plan.budget.pgbouncer
        assert pb is not None
        log(f"pgbouncer: {pb.processes} processes on {self.ports.pgbouncer} (so_reuseport)")
        self._start_pgbouncer(passwords)
        return StackRecord(
            stack=self.plan.stack,
            region=self.plan.region,
            ports=self.ports,
            runtime_url=self.runtime_url,
            aws_url=self.aws_url,
            master_password=self.postgres.master_password,
            app_password=passwords["app"],
            pgbouncer_admin_password=passwords["pgbouncer_admin"],
            secret_arns=arns,
            functions=[s.name for s in specs],
            database=self.plan.settings.database.name,
            ca_file=str(self.postgres.tls.ca_cert),
            pgbouncer_processes=pb.processes,
            started_at=time.time(),
            settings_hash=self.plan.settings_hash,
            settings=settings_document(self.plan.settings),
        )

    def _start_postgres(self) -> None:
        self.postgres.init()
        self.postgres.start()
        self.postgres.wait_ready()
        dbname = self.plan.settings.database.name
        with self.postgres.connect_admin() as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if exists.fetchone() is None:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))

    def _start_aws(self) -> None:
        log = self.paths.logs / "aws.log"
        with log.open("ab") as out:
            self.aws_proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports.aws)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.paths.pid_file("aws").write_text(f"{self.aws_proc.pid}\n")
        _wait_http(self.aws_url + "/moto-api/", self.aws_proc, log, "the moto server", 30)

    def _passwords(self) -> dict[str, str]:
        """Role passwords, generated once per stack and kept with its state (0600)."""
        path = self.paths.root / "passwords.json"
        wanted = [WORKLOAD_SECRET_PREFIX + w for w in self.plan.budget.workloads]
        if path.exists():
            stored: dict[str, str] = json.loads(path.read_text())
            if all(key in stored for key in wanted):
                return stored
            generated = stored
        else:
            generated = {
                "app": secrets.token_urlsafe(18),
                "migrator": secrets.token_urlsafe(18),
                "pgbouncer_admin": secrets.token_urlsafe(18),
            }
        for key in wanted:
            generated.setdefault(key, secrets.token_urlsafe(18))
        write_private(path, json.dumps(generated))
        return generated

    def aws_client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.aws_url,
            region_name=self.plan.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
        )

    def _put_secrets(self, passwords: dict[str, str]) -> dict[str, str]:
        """The three secrets, in RDS Proxy's shape; app_user's carries its SCRAM verifier."""
        port = self.ports.postgres
        common = {"engine": "postgres", "host": "127.0.0.1", "port": port}
        dbname = self.plan.settings.database.name
        au = self.plan.budget.app_user
        values = {
            MASTER_SECRET: {
                "username": MASTER_USER,
                "password": self.postgres.master_password,
                **common,
            },
            APP_ROLE_SECRET: {
                "username": au.name,
                "password": passwords["app"],
                "dbname": dbname,
                "scram_verifier": scram.make_verifier(passwords["app"]),
                **common,
            },
            MIGRATOR_SECRET: {
                "username": au.migration_role,
                "password": passwords["migrator"],
                "dbname": dbname,
                **common,
            },
        }
        for workload in self.plan.budget.workloads.values():
            key = WORKLOAD_SECRET_PREFIX + workload.name
            values[key] = {
                "username": workload.role,
                "password": passwords[key],
                "dbname": dbname,
                "scram_verifier": scram.make_verifier(passwords[key]),
                **common,
            }
        client = self.aws_client("secretsmanager")
        arns = {}
        for key, value in values.items():
            name = f"slotguard/{self.plan.stack}/{key}"
            created = client.create_secret(Name=name, SecretString=json.dumps(value))
            arns[key] = str(created["ARN"])
        return arns

    def _start_runtime(self, specs: list[FunctionSpec]) -> None:
        registry = Registry(
            settings=RuntimeSettings(
                region=self.plan.region, log_dir=self.paths.logs / "functions"
            ),
            functions=specs,
        )
        self.paths.registry_file.write_text(registry.model_dump_json(indent=2) + "\n")
        ready = self.paths.root / "runtime.endpoint"
        ready.unlink(missing_ok=True)
        log = self.paths.logs / "runtime.log"
        with log.open("ab") as out:
            self.runtime_proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "slotguard.local.runtime",
                    str(self.paths.registry_file),
                    "--port",
                    str(self.ports.runtime),
                    "--ready-file",
                    str(ready),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.paths.pid_file("runtime").write_text(f"{self.runtime_proc.pid}\n")
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.runtime_proc.poll() is not None:
                raise StackStartError(f"the local runtime exited:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise StackStartError(f"the local runtime did not start within 60 s:\n{_tail(log)}")
            time.sleep(0.05)

    def _bootstrap(self) -> None:
        client = lambda_client(endpoint_url=self.runtime_url, region_name=self.plan.region)
        response = client.invoke(
            FunctionName=BOOTSTRAP,
            # Only a trigger, as on AWS: the settings are in the function's configuration.
            Payload=b"{}",
        )
        body = response["Payload"].read().decode(errors="replace")
        if response.get("FunctionError"):
            raise StackStartError(f"the bootstrap function failed: {body}")
        (self.paths.logs / "bootstrap.json").write_text(body + "\n")

    def _start_pgbouncer(self, passwords: dict[str, str]) -> None:
        roles = [self.plan.budget.app_user.name] + [
            w.role for w in self.plan.budget.workloads.values()
        ]
        verifiers = admin_verifiers(passwords["pgbouncer_admin"])
        with self.postgres.connect_admin() as admin:
            for role in roles:
                row = admin.execute(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
                ).fetchone()
                if row is None or not str(row[0]).startswith("SCRAM-SHA-256$"):
                    raise StackStartError(f"role {role} has no SCRAM verifier after the bootstrap")
                verifiers[role] = str(row[0])
        settings = pgbouncer_settings(self.plan, self.ports, self.postgres.tls)
        self.pgbouncer = LocalPgBouncer(
            self.paths.pgbouncer,
            settings,
            verifiers,
            self.user,
            self.postgres.tls,
            admin_password=passwords["pgbouncer_admin"],
        )
        self.pgbouncer.stop()  # a leftover from a crashed run would hold the port
        self.pgbouncer.start()

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this stack started, newest first; safe to call on a partial start."""
        # The runtime stops its workers first, which takes a while with thousands of instances.
        _terminate(self.runtime_proc, self.paths.pid_file("runtime"), timeout_s=30)
        _terminate(self.aws_proc, self.paths.pid_file("aws"))
        if self.pgbouncer is not None:
            self.pgbouncer.stop()
        else:
            stop_pgbouncer_by_pidfiles(self.paths)
        if self.reader is not None:
            remove(self.reader)
        self.postgres.stop()


def _terminate(proc: subprocess.Popen[bytes] | None, pid_file: Path, timeout_s: float = 10) -> None:
    pid = proc.pid if proc is not None else read_pid(pid_file)
    if pid is not None and alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=5)
    pid_file.unlink(missing_ok=True)


def stop_pgbouncer_by_pidfiles(paths: StackPaths) -> None:
    """Stop PgBouncer processes named by their pid files (when no handle to them is left)."""
    for pid_file in paths.pgbouncer.glob("pgbouncer-*.pid"):
        _terminate(None, pid_file, timeout_s=5)


def master_conninfo(record: StackRecord) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=record.ports.postgres,
        user=MASTER_USER,
        password=record.master_password,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=record.ca_file,
        connect_timeout=5,
        application_name="slotguard-observer",
    )


def admin_conninfos(record: StackRecord, paths: StackPaths, *, user: str = STATS_USER) -> list[str]:
    """Each PgBouncer process's console, over its own unix socket."""
    return [
        psycopg.conninfo.make_conninfo(
            host=str(paths.pgbouncer / "run" / str(i + 1)),
            port=record.ports.pgbouncer,
            user=user,
            password=record.pgbouncer_admin_password,
            dbname="pgbouncer",
            connect_timeout=5,
        )
        for i in range(record.pgbouncer_processes)
    ]
