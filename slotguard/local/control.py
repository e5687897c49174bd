"""Bring a local stack up and down from the command line, and read how it is doing.

`up` only launches the supervisor (in a session of its own, so the stack outlives the command)
and waits for it to report ready or failed; `down` asks it to stop and then makes sure nothing of
the stack is left, by pid files and by the marker every process of the stack carries.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from infra.alarm_rules import local_alarm_rules
from pgbouncer.exporter import ADMIN_DATABASE, show_rows
from slotguard.local.drift import changed_paths, settings_document
from slotguard.local.postgres import LocalPostgres
from slotguard.local.replica import remove
from slotguard.local.runtime import RuntimeAdminClient
from slotguard.local.stack import (
    StackPlan,
    admin_conninfos,
    master_conninfo,
    postgres_server,
    stop_pgbouncer_by_pidfiles,
)
from slotguard.local.state import (
    STATE_DIR_ENV,
    StackPaths,
    StackRecord,
    alive,
    marked_processes,
    read_pid,
)
from slotguard.local.system import ensure_programs, service_user
from slotguard.storm.client import lambda_client

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


class StackError(RuntimeError):
    """The stack could not be brought up or observed; the message says what to do."""


def running_record(paths: StackPaths) -> StackRecord | None:
    """The record of a stack whose supervisor is alive, else None."""
    pid = read_pid(paths.supervisor_pid)
    if pid is None or not alive(pid):
        return None
    return paths.record()


@dataclass(frozen=True)
class UpResult:
    record: StackRecord
    already_running: bool
    # What differs between the running stack's settings and the stack file's (already running).
    changed: list[str] = field(default_factory=list)


def settings_changes(plan: StackPlan, record: StackRecord) -> list[str]:
    """The settings paths the stack file changed since the running stack started."""
    if record.settings_hash == plan.settings_hash:
        return []
    if not record.settings:
        return ["(the running stack's record predates settings tracking)"]
    return changed_paths(record.settings, settings_document(plan.settings))


def up(
    plan: StackPlan,
    progress: Callable[[str], None] = lambda _m: None,
    *,
    restart_if_changed: bool = False,
) -> UpResult:
    """Start the stack's supervisor and wait until it is ready (or say it already runs).

    A running stack whose stack file changed since it started is restarted with
    `restart_if_changed` (its data is kept), else reported with what changed.
    """
    paths = plan.paths
    existing = running_record(paths)
    if existing is not None:
        changed = settings_changes(plan, existing)
        if not changed or not restart_if_changed:
            return UpResult(existing, already_running=True, changed=changed)
        progress(f"settings changed ({', '.join(changed[:5])}): restarting the stack")
        down(plan)
    pid = read_pid(paths.supervisor_pid)
    if pid is not None and alive(pid):
        raise StackError(
            f"stack {plan.stack} is still starting (supervisor pid {pid}); wait, or run "
            f"`slotguard down --stack {plan.stack}`"
        )
    ensure_programs(postgres_major=plan.settings.database.engine_major)
    if paths.root.exists() and marked_processes(paths.root):
        progress("cleaning up what a previous run left behind")
        down(plan)  # a supervisor that died leaves its children holding the stack's ports
    paths.prepare()
    for stale in (paths.failure_file, paths.record_file, paths.supervisor_pid):
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", "slotguard.local.supervisor", "--stack", plan.stack]
    command += ["--project-dir", str(plan.project_dir), "--state-dir", str(paths.root.parent)]
    offset = paths.supervisor_log.stat().st_size if paths.supervisor_log.exists() else 0
    log = paths.supervisor_log.open("ab")
    env = {**os.environ, STATE_DIR_ENV: str(paths.root.parent)}
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        cwd=plan.project_dir,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        offset = _forward(paths.supervisor_log, offset, progress)
        record = paths.record() if paths.record_file.exists() else None
        if record is not None:
            return UpResult(record, already_running=False)
        if paths.failure_file.exists():
            reason = paths.failure_file.read_text().split("\n\n", 1)[0]
            raise StackError(
                f"stack {plan.stack} did not start: {reason}\n(log: {paths.supervisor_log})"
            )
        if proc.poll() is not None:
            raise StackError(
                f"the supervisor exited with {proc.returncode}; see {paths.supervisor_log}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"stack {plan.stack} not ready after {START_TIMEOUT_S:.0f} s; see "
                f"{paths.supervisor_log}, then `slotguard down --stack {plan.stack}`"
            )
        time.sleep(0.1)


def _forward(path: Path, offset: int, progress: Callable[[str], None]) -> int:
    """Pass new supervisor log lines to `progress`; returns the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data.rsplit(b"\n", 1)[0] if b"\n" in data else b""
    for line in complete.decode(errors="replace").splitlines():
        message = line.split(" INFO ", 1)[1] if " INFO " in line else line
        progress(message)
    return offset + len(complete) + (1 if complete else 0)


@dataclass
class DownResult:
    was_running: bool
    leftovers_killed: list[int] = field(default_factory=list)


def down(plan: StackPlan) -> DownResult:
    """Stop the supervisor (which stops the stack), then anything of the stack still running."""
    paths = plan.paths
    if not paths.root.exists():
        return DownResult(False, [])  # never started on this machine: nothing to stop
    pid = read_pid(paths.supervisor_pid)
    was_running = pid is not None and alive(pid)
    if pid is not None and was_running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    # Whatever the supervisor could not stop (it was killed, or crashed): pid files first.
    stop_pgbouncer_by_pidfiles(paths)
    for name in ("runtime", "aws"):
        leftover = read_pid(paths.pid_file(name))
        if leftover is not None and alive(leftover):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        paths.pid_file(name).unlink(missing_ok=True)
    # Only ports the stack saved: choosing new ones here would write into a stack that has none.
    ports = paths.ports() if paths.ports_file.exists() else None
    if (
        ports is not None
        and ports.reader is not None
        and (paths.reader / "pgdata" / "postmaster.pid").exists()
    ):
        reader = postgres_server(plan, ports, service_user())
        remove(
            LocalPostgres(paths.reader, replace(reader.settings, port=ports.reader), reader.user)
        )
    if ports is not None and (paths.postgres / "pgdata" / "postmaster.pid").exists():
        server: LocalPostgres = postgres_server(plan, ports, service_user())
        server.stop()
    killed = []
    for _attempt in range(20):
        remaining = marked_processes(paths.root)
        if not remaining:
            break
        for leftover in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
            killed.append(leftover)
        time.sleep(0.1)
    for stale in (paths.record_file, paths.supervisor_pid):
        stale.unlink(missing_ok=True)
    return DownResult(was_running or bool(killed), sorted(set(killed)))


def require_running(plan: StackPlan) -> StackRecord:
    record = running_record(plan.paths)
    if record is None:
        raise StackError(
            f"stack {plan.stack} is not running here; start it with `slotguard up --stack "
            f"{plan.stack}` (state: {plan.paths.root})"
        )
    return record


@dataclass
class StatusReport:
    """What `slotguard status` shows."""

    record: StackRecord
    health_status: int | None
    health_body: dict[str, Any]
    db_connections: int | None
    max_connections: int
    ceiling: int
    by_application: dict[str, int]
    pools: list[dict[str, Any]]
    alarms: list[dict[str, Any]]
    functions: dict[str, dict[str, Any]]


def status(plan: StackPlan) -> StatusReport:
    record = require_running(plan)
    health_status, health_body = invoke_health(record)
    db_connections: int | None = None
    by_app: dict[str, int] = {}
    with contextlib.suppress(psycopg.Error), psycopg.connect(master_conninfo(record)) as conn:
        rows = conn.execute(
            "SELECT coalesce(nullif(application_name, ''), usename, '?'), count(*)"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        by_app = {str(name): int(count) for name, count in rows}
        db_connections = sum(by_app.values())
    pools: list[dict[str, Any]] = []
    for index, conninfo in enumerate(admin_conninfos(record, plan.paths)):
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn,
            conn.cursor() as cur,
        ):
            pools += [
                {"process": index + 1, **pool}
                for pool in show_rows(cur, "SHOW POOLS")
                if pool["database"] != ADMIN_DATABASE
            ]
    alarms: list[dict[str, Any]] = []
    if plan.paths.alarm_states.exists():
        alarms = list(json.loads(plan.paths.alarm_states.read_text()).get("alarms", []))
    else:  # the evaluator has not taken its first sample yet: CloudWatch's word for it
        alarms = [
            {
                "key": rule.key,
                "state": "INSUFFICIENT_DATA",
                "value": None,
                "threshold": rule.threshold,
                "times_fired": 0,
                "description": rule.description,
            }
            for rule in local_alarm_rules(plan.budget)
        ]
    functions: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(Exception):
        functions = RuntimeAdminClient(record.runtime_url, timeout_s=5).stats()
    return StatusReport(
        record=record,
        health_status=health_status,
        health_body=health_body,
        db_connections=db_connections,
        max_connections=plan.budget.max_connections,
        ceiling=plan.budget.pooler_ceiling,
        by_application=by_app,
        pools=pools,
        alarms=alarms,
        functions=functions,
    )


def invoke_health(record: StackRecord) -> tuple[int | None, dict[str, Any]]:
    """Invoke the health function through the Lambda API, as a load balancer would."""
    if "health" not in record.functions:
        return None, {"status": "no health function in this stack"}
    client = lambda_client(endpoint_url=record.runtime_url, region_name=record.region)
    response = client.invoke(FunctionName="health", Payload=b"{}")
    text = response["Payload"].read().decode(errors="replace")
    try:
        document = json.loads(text)
    except ValueError:
        return None, {"status": "unreadable", "body": text[:300]}
    if response.get("FunctionError"):
        return None, {"status": "error", "error": document}
    body = document.get("body")
    parsed = json.loads(body) if isinstance(body, str) else {}
    return int(document.get("statusCode", 0)), parsed
