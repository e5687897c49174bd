"""What a storm fires at: the running local stack, or a deployed AWS stack read from Pulumi.

Both are Lambda Invoke endpoints reached through boto3 (the local runtime with `endpoint_url`,
AWS without), so the storm engine is the same; a target contributes the function for each
wiring, the payloads, and what it can observe (database connections, pooler queue, alarms).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from slotguard.local.control import require_running
from slotguard.local.fleet import release_fleet
from slotguard.local.monitor import DatabaseObserver, PoolerObserver
from slotguard.local.pgbouncer import ADMIN_USER
from slotguard.local.runtime import RuntimeAdminClient
from slotguard.local.stack import (
    DIRECT_SUFFIX,
    NAIVE_SUFFIX,
    NORETRY_SUFFIX,
    PROBE,
    StackPlan,
    admin_conninfos,
    master_conninfo,
)
from slotguard.local.state import StackRecord
from slotguard.storm import DbSample, Limits, Wiring, lambda_client
from slotguard.storm.traffic import Traffic, TrafficError, choose_traffic

WiringName = Literal["pooled", "direct", "naive"]
WIRINGS: tuple[WiringName, ...] = ("pooled", "direct", "naive")
# The evaluator samples every second; wait this long after a burst for its last sample.
ALARM_SETTLE_S = 1.5
# Instances created per warm-up step. A cold start of the API costs ~50 ms of CPU (a copy of the
# package, a boto3 client, the secret, a TLS + SCRAM login) and a function's instances share one
# worker process: a hundred at a time finish well inside the function timeout.
WARM_STEP = 100


class TargetError(RuntimeError):
    """The target cannot be stormed as asked; the message says what to change."""


def payloads(query_ms: int, event: Callable[[int], Any] | None = None) -> Callable[[int], Any]:
    """The chosen function's event, or the probe's hold of `query_ms` when a duration is asked."""
    if query_ms > 0:
        return lambda _index: {"query_ms": query_ms}
    if event is None:
        raise TargetError("no event for the storm: pass --event FILE or --query-ms")
    return event


def holder_payload(
    function_name: str, event: Callable[[int], Any] | None = None
) -> Callable[[int], Any]:
    """What a frozen instance of `function_name` is invoked with before it is left frozen."""
    if function_name.startswith(PROBE):
        return lambda _index: {"query_ms": 0}
    if event is None:
        raise TargetError(f"no event to leave {function_name} frozen with: pass --event FILE")
    return event


def local_function(wiring: WiringName, *, function: str, retries: bool, query_ms: int) -> str:
    """The local variant of `function` behind a wiring (the probe when a duration is asked)."""
    base = PROBE if query_ms > 0 else function
    if wiring == "naive":
        return base + NAIVE_SUFFIX
    if wiring == "direct":
        return base + (DIRECT_SUFFIX if retries else NAIVE_SUFFIX)
    return base if retries else base + NORETRY_SUFFIX


def sibling(function_name: str, function: str) -> str:
    """The same wiring's other function: frozen instances live there so a burst cannot thaw them.

    The probe's variants for a variant of `function`, and `function`'s for a probe variant.
    """
    if function_name.startswith(PROBE):
        return function + function_name[len(PROBE) :]
    return PROBE + function_name[len(function) :]


def base_function(plan: StackPlan, function_name: str) -> str:
    """The stack's function a variant was derived from (the probe's: the stack's first)."""
    base = function_name
    for suffix in (NORETRY_SUFFIX, DIRECT_SUFFIX, NAIVE_SUFFIX):
        base = base.removesuffix(suffix)
    return next(iter(plan.settings.functions)) if base == PROBE else base


def reserved_limit(plan: StackPlan, function_name: str) -> int | None:
    """The reserved concurrency a local function (or variant) runs under, if it has one."""
    fn = plan.settings.functions.get(base_function(plan, function_name))
    limit = getattr(fn, "reserved_concurrency", None)
    return limit if isinstance(limit, int) else None


def capped_count(plan: StackPlan, function_name: str, wanted: int, notes: list[str]) -> int:
    """How many instances to warm: at most the function's limit; a cap is noted, once."""
    limit = reserved_limit(plan, function_name)
    if limit is None or wanted <= limit:
        return wanted
    note = (
        f"{function_name} may run {limit} instances (its reserved concurrency): warmed up to "
        f"{limit}; a burst of {wanted:,} is throttled beyond {limit}, as Lambda would"
    )
    if note not in notes:
        notes.append(note)
    return limit


def _instances(count: int, wanted: int) -> str:
    capped = " (its reserved concurrency: the rest of the burst is throttled)"
    return f"{count:,} instances" + (capped if count < wanted else "")


def _target_notes(frozen: int, functions: set[str], traffic: Traffic | None) -> list[str]:
    notes = []
    if frozen:
        notes.append(
            f"{frozen} frozen instances per wiring, held by its sibling function so the burst "
            "cannot thaw them"
        )
    notes.append(f"functions: {', '.join(sorted(functions))}")
    if traffic is not None:
        notes.append(f"event: {traffic.source}")
    return notes


@dataclass
class StormTarget:
    """Everything `run_storm` needs from a target."""

    name: str
    wirings: list[Wiring]
    limits: Limits | None
    observer: Callable[[], DbSample] | None = None
    before_each: Callable[[Wiring], None] | None = None
    alarms: Callable[[Wiring], Sequence[str]] | None = None
    closers: list[Callable[[], object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # When each wiring's frozen instances were last invoked (epoch seconds).
    frozen_at: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()


def local_target(
    plan: StackPlan,
    wirings: Sequence[WiringName],
    *,
    burst: int,
    traffic: Traffic | None = None,
    retries: bool = True,
    query_ms: int = 0,
    frozen: int = 0,
    warm: bool = True,
    say: Callable[[str], None] = lambda _message: None,
) -> StormTarget:
    """The running local stack: wirings through its runtime, observed on its database and pooler.

    With `warm`, each wiring's function first gets `burst` instances, created in steps of
    `WARM_STEP` and left frozen, so the burst meets a warm fleet as a busy stack's would: on AWS
    every cold start has its own CPU, here a function's cold starts share one process, and a
    thousand at once would spend the burst in imports rather than on the database. A function
    is warmed up to its reserved concurrency at most: the rest of the burst is throttled.

    `traffic` is the function and event (default: the stack's storm function and its sample
    event; with `query_ms`, the probe holds its connection instead).
    """
    record = require_running(plan)
    traffic = _traffic(plan, traffic, needed=query_ms == 0 or frozen > 0)
    function = traffic.function if traffic is not None else plan.settings.traffic_function
    event = traffic.payload if traffic is not None else None
    client = lambda_client(
        endpoint_url=record.runtime_url, region_name=record.region, pool_size=burst
    )
    payload = payloads(query_ms, event)
    storm_wirings = [
        Wiring(
            name,
            local_function(name, function=function, retries=retries, query_ms=query_ms),
            client,
            payload,
        )
        for name in wirings
    ]
    _require_functions(plan, record, [w.function_name for w in storm_wirings])
    # The storm's own connections are opened now, before any burst, and kept to the end: one
    # superuser session serves the sampler and every release between wirings, and the pooler
    # consoles are PgBouncer's own. Counted in the budget's admin margin (see docs/storm.md).
    db = DatabaseObserver(master_conninfo(record))
    pooler = PoolerObserver(admin_conninfos(record, plan.paths))
    try:
        _keep_open(db)
        pooler.waiting()
    except psycopg.Error as exc:
        db.close()
        pooler.close()
        raise TargetError(
            f"the storm could not open its observer connections to stack {plan.stack}: "
            f"{_one_line(exc)}; wait for the database to settle (`slotguard status --stack "
            f"{plan.stack}`) and run it again"
        ) from None
    runtime = RuntimeAdminClient(record.runtime_url, timeout_s=300)
    functions = {w.function_name for w in storm_wirings}
    direct_names = direct_function_names(record)
    started: dict[str, float] = {}
    frozen_at: dict[str, float] = {}
    notes: list[str] = []

    def release(when: str) -> None:
        # The fleet of an earlier direct wiring (and its warm-up) is gone before anything else
        # starts: its idle backends terminated, its logins in progress ended.
        released = release_fleet(db.connection(), direct_names)
        if released.waited_s >= 1.0:
            say(f"{when}: {released.describe()}")
        if not released.complete:
            notes.append(f"{when}: {released.describe()}")
        close_idle_pooler_servers(plan, record, conn=db.connection())

    def observe() -> DbSample:
        return DbSample(db_connections=db.connections(), waiting=pooler.waiting())

    def before_each(wiring: Wiring) -> None:
        # Each wiring starts from the same database: connections that frozen instances of an
        # earlier direct wiring still hold are closed server-side (their instances notice on
        # next use, as after any server restart), then the frozen instances are set up.
        release(f"before {wiring.name}")
        if warm:
            count = capped_count(plan, wiring.function_name, burst, notes)
            say(f"{wiring.name}: warming {wiring.function_name} up to {_instances(count, burst)}")
            warm_up(runtime, wiring.function_name, count, payload)
            release(f"after warming {wiring.function_name}")
        if frozen:
            holder = sibling(wiring.function_name, function)
            count = capped_count(plan, holder, frozen, notes)
            say(f"{wiring.name}: leaving {count:,} instances of {holder} frozen")
            warm_up(runtime, holder, count, holder_payload(holder, event))
            frozen_at[wiring.name] = time.time()
        started[wiring.name] = time.time()

    def alarms(wiring: Wiring) -> list[str]:
        time.sleep(ALARM_SETTLE_S)
        return alarms_since(plan, started.get(wiring.name, 0.0))

    limits = Limits(
        max_connections=plan.budget.max_connections,
        ceiling=plan.budget.pooler_ceiling,
        reserved=plan.budget.reserved_connections,
        admin_margin=plan.budget.admin_margin,
    )
    notes += _target_notes(frozen, functions, traffic if query_ms == 0 else None)
    return StormTarget(
        name=f"local:{plan.stack}",
        wirings=storm_wirings,
        limits=limits,
        observer=observe,
        before_each=before_each,
        alarms=alarms,
        # Frozen direct instances would keep app_user's slots, which the pooler's server
        # connections share (CONNECTION LIMIT = the ceiling): leave the stack as it was found.
        closers=[
            lambda: release("after the storm"),
            db.close,
            pooler.close,
        ],
        notes=notes,  # the same list: releases between wirings add to it
        frozen_at=frozen_at,
    )


def _traffic(plan: StackPlan, traffic: Traffic | None, *, needed: bool) -> Traffic | None:
    """The given traffic, else the stack's default when an event is needed."""
    if traffic is not None or not needed:
        return traffic
    try:
        return choose_traffic(plan.settings)
    except TrafficError as exc:
        raise TargetError(str(exc)) from None


def _require_functions(plan: StackPlan, record: StackRecord, names: Sequence[str]) -> None:
    """Refuse before any burst when the running stack lacks a function the storm would call."""
    missing = sorted(set(names) - set(record.functions))
    if missing:
        serving = [n for n in record.functions if n in plan.settings.functions]
        raise TargetError(
            f"the running stack {plan.stack} has no function {', '.join(missing)} (it serves "
            f"{', '.join(serving)}); restart it with its current file: slotguard down --stack "
            f"{plan.stack} && slotguard up --stack {plan.stack}"
        )


def warm_up(runtime: RuntimeAdminClient, function_name: str, count: int, payload: Any) -> None:
    """Bring `function_name` to `count` instances, `WARM_STEP` new ones at a time.

    Each step cold-starts `WARM_STEP` new instances (the runtime's `fresh` freeze), invokes them
    once and leaves them frozen. A failed invocation (a direct wiring out of slots) still leaves
    a warm instance behind, which is all a warm-up needs. Existing instances count.
    """
    have = int(runtime.stats().get(function_name, {}).get("instances", 0))
    while have < count:
        step = min(WARM_STEP, count - have)
        runtime.freeze(function_name, step, payload(0), fresh=True)
        have += step


def close_idle_pooler_servers(
    plan: StackPlan,
    record: StackRecord,
    wait_s: float = 10.0,
    *,
    conn: psycopg.Connection[Any] | None = None,
) -> None:
    """Have PgBouncer close its idle server connections (RECONNECT) and wait until they are gone.

    They are `app_user` sessions, and `app_user`'s CONNECTION LIMIT is the pooler ceiling: left
    open after a pooled burst they would take the slots a direct wiring then competes for.
    """
    for conninfo in admin_conninfos(record, plan.paths, user=ADMIN_USER):
        with psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            c.execute("RECONNECT")
    role = plan.budget.app_user.name
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        if conn is None:  # `conn`: a kept admin connection, when the caller has one
            conn = stack.enter_context(_admin_connection(master_conninfo(record)))
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'idle'",
                (role,),
            ).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.1)


def direct_function_names(record: StackRecord) -> list[str]:
    """The local functions wired straight to the database (their application_name)."""
    return sorted(n for n in record.functions if n.endswith((DIRECT_SUFFIX, NAIVE_SUFFIX)))


def _keep_open(db: DatabaseObserver) -> None:
    """Open the observer's kept connection, retried as `_admin_connection` is."""
    for attempt in Retrying(
        stop=stop_after_delay(30),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    ):
        with attempt:
            db.connection()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _admin_connection(conninfo: str) -> psycopg.Connection[Any]:
    """A superuser connection, retried: right after a direct storm every slot, the reserved ones
    included, can still be held by backends that are starting up for clients that gave up."""
    for attempt in Retrying(
        stop=stop_after_delay(30),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(psycopg.OperationalError),
        reraise=True,
    ):
        with attempt:
            return psycopg.connect(conninfo, autocommit=True)
    raise AssertionError("unreachable: tenacity re-raises the last error")


def release_direct_connections(conninfo: str, application_names: list[str]) -> int:
    """Terminate idle backends opened straight to the database by the direct functions."""
    if not application_names:
        return 0
    with _admin_connection(conninfo) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND application_name = ANY({})"
            ).format(sql.Literal(application_names))
        ).fetchall()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)",
                (application_names,),
            ).fetchone()
            if left is None or left[0] == 0:
                break
            time.sleep(0.05)
    return len(rows)


def alarms_since(plan: StackPlan, since: float) -> list[str]:
    """Alarms the local evaluator moved into ALARM at or after `since` (from its log)."""
    log = plan.paths.alarm_log
    if not log.exists():
        return []
    fired: list[str] = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            if entry["new"] == "ALARM" and entry["at"] >= since and entry["key"] not in fired:
                fired.append(entry["key"])
    return fired


# -- AWS ---------------------------------------------------------------------------------------


def pulumi_outputs(stack: str, runner: Callable[[list[str]], str] | None = None) -> dict[str, Any]:
    """`pulumi stack output --json --stack NAME`, parsed; a clear error when Pulumi is missing."""
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
    if runner is None:
        if shutil.which("pulumi") is None:
            raise TargetError(
                "the Pulumi CLI is not installed, so the deployed stack's outputs cannot be read; "
                "install it (https://www.pulumi.com/docs/install/) or storm the local target "
                "with `--target local`"
            )
        runner = _run_pulumi
    return parse_outputs(runner(command), stack)


def _run_pulumi(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TargetError(f"`{' '.join(command)}` failed: {result.stderr.strip()[:500]}")
    return result.stdout


def parse_outputs(text: str, stack: str) -> dict[str, Any]:
    """The stack's outputs; refuses a document without the function names the storm needs."""
    try:
        outputs = json.loads(text)
    except ValueError as exc:
        raise TargetError(
            f"stack {stack}: `pulumi stack output --json` is not JSON: {exc}"
        ) from None
    if not isinstance(outputs, dict):
        raise TargetError(f"stack {stack}: expected a JSON object of outputs")
    names = outputs.get("function_names")
    if not isinstance(names, dict) or not names:
        raise TargetError(
            f"stack {stack} has no `function_names` output; deploy it with this kit's program "
            "(`pulumi up`) first"
        )
    return outputs


def aws_target(
    stack: str,
    wirings: Sequence[WiringName],
    *,
    burst: int,
    region: str | None,
    traffic: Traffic,
    outputs: dict[str, Any] | None = None,
    client: Any = None,
) -> StormTarget:
    """A deployed stack: only its pooled wiring exists there (functions reach the pooler only)."""
    unsupported = [w for w in wirings if w != "pooled"]
    if unsupported:
        raise TargetError(
            f"wiring {', '.join(unsupported)} exists on the local target only: a deployed stack "
            "wires its functions to the pooler; use `--wiring pooled` with `--target aws`"
        )
    outputs = outputs if outputs is not None else pulumi_outputs(stack)
    names: dict[str, str] = outputs["function_names"]
    if traffic.function not in names:
        raise TargetError(
            f"the deployed stack {stack} has no function {traffic.function!r} (functions: "
            f"{', '.join(names)}); deploy it first, or choose one with --function"
        )
    lambda_ = client or lambda_client(region_name=region or "us-east-1", pool_size=burst)
    limits = None
    if isinstance(outputs.get("max_connections"), int):
        limits = Limits(
            max_connections=int(outputs["max_connections"]),
            ceiling=outputs.get("pooler_ceiling")
            if isinstance(outputs.get("pooler_ceiling"), int)
            else None,
        )
    return StormTarget(
        name=f"aws:{stack}",
        wirings=[Wiring("pooled", names[traffic.function], lambda_, traffic.payload)],
        limits=limits,
        notes=["database connections are on the stack's CloudWatch dashboard"],
    )
