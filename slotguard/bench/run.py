"""`python -m slotguard.bench`: the local target's eight benchmarks, figures printed and written.

1. 1,000 concurrent invocations of the real API through the runtime: pooled, direct (the
   helper's retries) and naive (direct, no retries), side by side.
2. 10,000 simulated instances through the pooler (asyncio clients, the helper's retry policy).
3. Every pooled run's peak database connections against the ceiling plus the admin margin.
4. A sustained warm run against the pool's physical limit (server connections / query time).
5. 1,000 frozen instances holding client connections, a burst of 1,000, then the pooler's reaping.
6. pgbench `-S` at 8 clients through the pooler and directly.
7. pgbench `-S -M prepared` at 8 clients through the pooler and directly (prepared statements
   through PgBouncer's `max_prepared_statements`).
8. Logins per second per PgBouncer process, the pooler's CPU only (slotguard.bench.logins).

JSON goes to `build/bench/`, the tables and chart to `docs/benchmarks.md` and `docs/`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.markup import escape

from slotguard.bench import pgbench
from slotguard.bench.logins import bench_logins
from slotguard.bench.markdown import write_markdown
from slotguard.bench.simulated import InstanceSpec, SimulationResult, simulate
from slotguard.commands.storm import run_target
from slotguard.local.control import running_record, up
from slotguard.local.monitor import DatabaseObserver
from slotguard.local.pgbouncer import ADMIN_USER
from slotguard.local.stack import StackPlan, admin_conninfos, master_conninfo
from slotguard.local.state import KIT_ROOT, StackRecord
from slotguard.local.targets import (
    direct_function_names,
    local_target,
    release_direct_connections,
)
from slotguard.storm import StormReport
from slotguard.storm.chart import write_chart

console = Console()
SUSTAIN_WARMUP_S = 3.0
OBSERVER_CONNECTIONS = 2


@dataclass
class Peaks:
    """Peak database connections and pooler clients seen while something ran."""

    db_connections: int = 0
    pooler_clients: int = 0
    errors: list[str] = field(default_factory=list)


class PeakWatcher(threading.Thread):
    """Samples the database and the pooler every 100 ms on its own connections."""

    def __init__(self, record: StackRecord, plan: StackPlan) -> None:
        super().__init__(daemon=True, name="peaks")
        self.db = DatabaseObserver(master_conninfo(record))
        self.consoles = admin_conninfos(record, plan.paths)
        self.peaks = Peaks()
        self.stop_event = threading.Event()

    def _clients(self, conns: list[psycopg.Connection[Any]]) -> int:
        total = 0
        for conn in conns:
            for row in conn.execute("SHOW LISTS").fetchall():
                if row[0] == "used_clients":
                    total += int(row[1]) - 1  # this console connection
        return total

    def run(self) -> None:
        conns = [
            psycopg.connect(c, autocommit=True, cursor_factory=psycopg.ClientCursor)
            for c in self.consoles
        ]
        try:
            while not self.stop_event.wait(0.1):
                try:
                    self.peaks.db_connections = max(
                        self.peaks.db_connections, self.db.connections()
                    )
                    self.peaks.pooler_clients = max(self.peaks.pooler_clients, self._clients(conns))
                except psycopg.Error as exc:
                    self.peaks.errors.append(str(exc))
        finally:
            for conn in conns:
                conn.close()
            self.db.close()

    def __enter__(self) -> Peaks:
        self.start()
        return self.peaks

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def pooler_conninfo(record: StackRecord, app_role: str, connect_timeout_s: int) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=record.ports.pgbouncer,
        user=app_role,
        password=record.app_password,
        dbname=record.database,
        sslmode="verify-full",
        sslrootcert=record.ca_file,
        connect_timeout=connect_timeout_s,
        application_name="simulated",
    )


def clients_named(plan: StackPlan, record: StackRecord, application_name: str) -> int:
    """Client connections of one application on every PgBouncer process (SHOW CLIENTS)."""
    total = 0
    for conninfo in admin_conninfos(record, plan.paths):
        with (
            psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as c,
            c.cursor() as cur,
        ):
            cur.execute("SHOW CLIENTS")
            names = [d.name for d in cur.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            total += sum(1 for r in rows if r.get("application_name") == application_name)
    return total


def _say(message: str) -> None:
    console.print(f"[dim]{escape(message)}[/]")


def _storm_summary(report: StormReport) -> list[dict[str, Any]]:
    return [w.summary() for w in report.wirings]


def bench_storm(plan: StackPlan, out: Path, burst: int) -> dict[str, Any]:
    console.rule(f"1. {burst:,} concurrent invocations: pooled, direct, naive")
    target = local_target(plan, ["pooled", "direct", "naive"], burst=burst, say=_say)
    try:
        report = run_target(target, burst, console=console, settings={"burst": burst})
    finally:
        target.close()
    report.write_json(out / "storm.json")
    chart = KIT_ROOT / "docs" / "benchmarks-storm.png"
    write_chart(
        report.wirings, chart, title=f"{burst:,} concurrent invocations, stack {plan.stack}"
    )
    # app_user's CONNECTION LIMIT (the ceiling) binds before the server's own limit: time spent
    # there, counting the two observer connections (the storm's sampler, the alarm evaluator).
    role_limit = plan.budget.app_user.connection_limit + OBSERVER_CONNECTIONS
    summaries = _storm_summary(report)
    for summary, result in zip(summaries, report.wirings, strict=True):
        samples = result.samples
        summary["time_at_role_limit_s"] = sum(
            after.t_s - here.t_s
            for here, after in itertools.pairwise(samples)
            if here.db_connections >= role_limit
        )
    return {"wirings": summaries, "chart": chart.name, "role_limit": role_limit}


def bench_simulated(plan: StackPlan, record: StackRecord, instances: int) -> dict[str, Any]:
    console.rule(f"2. {instances:,} simulated instances through the pooler")
    release_direct_connections(master_conninfo(record), direct_function_names(record))
    fn = plan.budget.functions[plan.settings.traffic_function]
    spec = InstanceSpec(
        pooler_conninfo(record, plan.budget.app_user.name, fn.connect_timeout_s),
        retry_budget_s=fn.retry_budget_s,
        hold_s=10.0,
    )
    with PeakWatcher(record, plan) as peaks:
        result = simulate(spec, instances)
    return {
        **_sim(result),
        "peak_db_connections": peaks.db_connections,
        "peak_pooler_clients": peaks.pooler_clients,
    }


def _sim(result: SimulationResult) -> dict[str, Any]:
    return {**asdict(result), "failed_total": result.failed_total}


def bench_sustained(
    plan: StackPlan, record: StackRecord, query_ms: float, seconds: float, clients: int
) -> dict[str, Any]:
    console.rule(
        f"4. sustained warm run: {clients} clients, {query_ms:g} ms queries, {seconds:g} s"
    )
    release_direct_connections(master_conninfo(record), direct_function_names(record))
    fn = plan.budget.functions[plan.settings.traffic_function]
    spec = InstanceSpec(
        pooler_conninfo(record, plan.budget.app_user.name, fn.connect_timeout_s),
        retry_budget_s=fn.retry_budget_s,
        query_ms=query_ms,
        sustain_s=seconds,
        measure_after_s=SUSTAIN_WARMUP_S,
    )
    with PeakWatcher(record, plan) as peaks:
        result = simulate(spec, clients)
    servers = plan.budget.pooler_server_connections
    limit = servers / (query_ms / 1000.0)
    # Steady state only: the first seconds are the clients connecting and the reserve pool
    # opening (after reserve_pool_timeout), not the pool's throughput.
    achieved = result.measured_transactions / (result.duration_s - SUSTAIN_WARMUP_S)
    return {
        **_sim(result),
        "server_connections": servers,
        "query_ms": query_ms,
        "measured_from_s": SUSTAIN_WARMUP_S,
        "physical_limit_tps": limit,
        "achieved_tps": achieved,
        "ratio": achieved / limit,
        "peak_db_connections": peaks.db_connections,
    }


def bench_frozen(plan: StackPlan, record: StackRecord, out: Path, count: int) -> dict[str, Any]:
    console.rule(f"5. {count:,} frozen instances, then a burst of {count:,}")
    target = local_target(plan, ["pooled"], burst=count, frozen=count, say=_say)
    try:
        report = run_target(target, count, console=console, settings={"frozen": count})
    finally:
        target.close()
    report.write_json(out / "frozen.json")
    frozen_at = target.frozen_at.get("pooled", time.time())
    held_after_burst = clients_named(plan, record, "probe")
    timeout = plan.budget.pgbouncer.client_idle_timeout_s if plan.budget.pgbouncer else 0
    deadline = frozen_at + timeout + 30
    left = held_after_burst
    while left and time.time() < deadline:
        time.sleep(0.25)
        left = clients_named(plan, record, "probe")
    reaped_after = time.time() - frozen_at
    (pooled,) = report.wirings
    return {
        "burst": pooled.summary(),
        "frozen": count,
        "frozen_client_connections_after_burst": held_after_burst,
        "left_unreaped": left,
        "reaped_after_s": reaped_after,
        "client_idle_timeout_s": timeout,
    }


def bench_pgbench(plan: StackPlan, record: StackRecord, seconds: int) -> dict[str, Any]:
    console.rule("6. pgbench -S, 8 clients, through the pooler and directly")
    role = plan.budget.app_user.name
    schema = plan.budget.app_user.schema_name
    pgbench.prepare(record, schema, role)
    try:
        # app_user's CONNECTION LIMIT is the pooler ceiling: the direct run needs the slots the
        # pooler's idle server connections and frozen direct instances hold, so it goes first.
        free_role_slots(plan, record, role, needed=8)
        direct = pgbench.run(record, record.ports.postgres, role, seconds=seconds)
        pooled = pgbench.run(record, record.ports.pgbouncer, role, seconds=seconds)
    finally:
        pgbench.drop(record, schema)
    return {
        "pooled": asdict(pooled),
        "direct": asdict(direct),
        "latency_ratio": pooled.latency_ms / direct.latency_ms,
    }


def bench_pgbench_prepared(plan: StackPlan, record: StackRecord, seconds: int) -> dict[str, Any]:
    console.rule("7. pgbench -S -M prepared, 8 clients, through the pooler and directly")
    role = plan.budget.app_user.name
    schema = plan.budget.app_user.schema_name
    pgbench.prepare(record, schema, role)
    try:
        free_role_slots(plan, record, role, needed=8)
        direct = pgbench.run(
            record, record.ports.postgres, role, seconds=seconds, protocol="prepared"
        )
        pooled = pgbench.run(
            record, record.ports.pgbouncer, role, seconds=seconds, protocol="prepared"
        )
    finally:
        pgbench.drop(record, schema)
    pb = plan.budget.pgbouncer
    return {
        "pooled": asdict(pooled),
        "direct": asdict(direct),
        "latency_ratio": pooled.latency_ms / direct.latency_ms,
        "max_prepared_statements": pb.max_prepared_statements if pb is not None else None,
    }


def free_role_slots(plan: StackPlan, record: StackRecord, role: str, *, needed: int) -> None:
    """Close the role's idle connections (direct instances', the pooler's) until `needed` fit."""
    release_direct_connections(master_conninfo(record), direct_function_names(record))
    for conninfo in admin_conninfos(record, plan.paths, user=ADMIN_USER):
        with psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            c.execute("RECONNECT")
    limit = plan.budget.app_user.connection_limit
    deadline = time.monotonic() + 90  # PgBouncer closes released idle servers within seconds
    with psycopg.connect(master_conninfo(record), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
            ).fetchone()
            if row is not None and row[0] + needed <= limit:
                return
            time.sleep(0.5)
    raise RuntimeError(f"{role} still holds too many connections for {needed} more")


def ensure_running(plan: StackPlan) -> StackRecord:
    record = running_record(plan.paths)
    if record is None:
        console.print(f"starting stack {plan.stack}")
        record = up(plan, progress=lambda m: console.print(f"  {escape(m)}")).record
    return record


def main(  # every option is keyword-only: Typer reads them by name
    *,
    stack: Annotated[str, typer.Option(help="Stack to benchmark (started if needed).")] = "dev",
    burst: Annotated[int, typer.Option(help="Benchmarks 1 and 5: invocations, frozen.")] = 1000,
    instances: Annotated[int, typer.Option(help="Benchmark 2: simulated instances.")] = 10000,
    only: Annotated[str, typer.Option(help="Benchmarks to run (3 is derived).")] = "1,2,4,5,6,7,8",
    out: Annotated[Path, typer.Option(help="Where the JSON goes.")] = KIT_ROOT / "build" / "bench",
    docs: Annotated[Path, typer.Option(help="The generated page.")] = KIT_ROOT
    / "docs"
    / "benchmarks.md",
) -> None:
    """Run the benchmarks and write their figures."""
    plan = StackPlan.load(stack)
    record = ensure_running(plan)
    out.mkdir(parents=True, exist_ok=True)
    chosen = {part.strip() for part in only.split(",")}
    previous = out / "results.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("1", lambda: bench_storm(plan, out, burst)),
        ("2", lambda: bench_simulated(plan, record, instances)),
        ("4", lambda: bench_sustained(plan, record, 50.0, 15.0, 200)),
        ("5", lambda: bench_frozen(plan, record, out, burst)),
        ("6", lambda: bench_pgbench(plan, record, 10)),
        ("7", lambda: bench_pgbench_prepared(plan, record, 10)),
        ("8", lambda: bench_logins(plan, record)),
    ]
    for key, step in steps:
        if key in chosen:
            results[key] = step()
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
            console.print_json(json.dumps(_brief(key, results[key]), default=str))
    results["3"] = ceiling_check(plan, results)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "stack": plan.stack,
        "max_connections": plan.budget.max_connections,
        "pooler_ceiling": plan.budget.pooler_ceiling,
        "admin_margin": plan.budget.admin_margin,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print_json(json.dumps(results["3"]))
    write_markdown(results, docs)
    console.print(escape(f"wrote {out / 'results.json'} and {docs}"))


def _brief(key: str, result: dict[str, Any]) -> dict[str, Any]:
    if key == "1":
        return {
            w["wiring"]: {
                k: w[k]
                for k in (
                    "succeeded",
                    "failed",
                    "failed_by_cause",
                    "p50_ms",
                    "p99_ms",
                    "peak_db_connections",
                    "time_at_limit_s",
                )
            }
            for w in result["wirings"]
        }
    return {k: v for k, v in result.items() if not isinstance(v, list | dict) or k == "failed"}


def ceiling_check(plan: StackPlan, results: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 3: each pooled run's peak against the ceiling plus the admin margin."""
    limit = plan.budget.pooler_ceiling + plan.budget.admin_margin
    peaks: dict[str, int | None] = {}
    with contextlib.suppress(KeyError, TypeError):
        pooled = next(w for w in results["1"]["wirings"] if w["wiring"] == "pooled")
        peaks["1. pooled burst"] = pooled["peak_db_connections"]
    with contextlib.suppress(KeyError, TypeError):
        peaks["2. simulated instances"] = results["2"]["peak_db_connections"]
    with contextlib.suppress(KeyError, TypeError):
        peaks["4. sustained run"] = results["4"]["peak_db_connections"]
    with contextlib.suppress(KeyError, TypeError):
        peaks["5. burst after frozen"] = results["5"]["burst"]["peak_db_connections"]
    return {
        "limit": limit,
        "peaks": peaks,
        "all_within": all(p is not None and p <= limit for p in peaks.values()),
    }


def cli() -> None:
    typer.run(main)
