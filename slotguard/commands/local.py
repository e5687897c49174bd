"""`slotguard up`, `down` and `status`: the local target from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infra.budget import BudgetError
from infra.settings import SettingsError
from slotguard.commands.common import ProjectDirOption, plain, project_root
from slotguard.local.control import StackError, StatusReport, down, status, up
from slotguard.local.stack import StackPlan, StackStartError
from slotguard.local.state import StackRecord
from slotguard.local.system import MissingSystemPackageError

StackOption = Annotated[str, typer.Option(help="Stack name: the Pulumi.<stack>.yaml to rehearse.")]

console = Console(width=max(Console().width, 120))


def load_plan(stack: str, project_dir: Any) -> StackPlan:
    """The stack's plan, or a clear error naming the setting to change."""
    try:
        return StackPlan.load(stack, project_root(project_dir))
    except (SettingsError, BudgetError, StackStartError, ValueError) as exc:
        console.print(f"[red]error:[/] {plain(exc)}")
        raise typer.Exit(2) from None


def up_command(
    stack: StackOption = "dev",
    project_dir: ProjectDirOption = None,
    restart: Annotated[
        bool,
        typer.Option(
            help="Restart a running stack whose stack file changed since it started (its "
            "data is kept); without it, `up` says what changed and exits 1."
        ),
    ] = False,
) -> None:
    """Start the stack on this machine: PostgreSQL, PgBouncer, functions, alarms."""
    plan = load_plan(stack, project_dir)
    try:
        with console.status(f"starting stack {stack}") as spinner:
            result = up(
                plan, progress=lambda m: spinner.update(plain(m)), restart_if_changed=restart
            )
    except (StackError, MissingSystemPackageError) as exc:
        console.print(f"[red]error:[/] {plain(exc)}")
        raise typer.Exit(1) from None
    record = result.record
    if result.already_running and result.changed:
        shown = ", ".join(result.changed[:8]) + (" ..." if len(result.changed) > 8 else "")
        console.print(
            f"[red]error:[/] stack [bold]{stack}[/] is running with other settings than "
            f"Pulumi.{plain(stack)}.yaml holds now (changed: {plain(shown)}); restart it "
            f"with them: slotguard up --stack {plain(stack)} --restart"
        )
        raise typer.Exit(1)
    if result.already_running:
        console.print(f"stack [bold]{stack}[/] is already running (state {plain(plan.paths.root)})")
        return
    console.print(where_table(plan, record, f"stack {stack} is up"))


def addresses(plan: StackPlan, record: StackRecord) -> dict[str, Any]:
    """Where the stack's parts listen and keep their state (`up` prints it, `status` too)."""
    pb = plan.budget.pgbouncer
    assert pb is not None
    return {
        "database": {
            "host": "127.0.0.1",
            "port": record.ports.postgres,
            "max_connections": plan.budget.max_connections,
            "tls": True,
        },
        **(
            {"reader": {"host": "127.0.0.1", "port": record.ports.reader, "streaming": True}}
            if record.ports.reader is not None
            else {}
        ),
        "pooler": {
            "host": "127.0.0.1",
            "port": record.ports.pgbouncer,
            "processes": pb.processes,
            "ceiling": plan.budget.pooler_ceiling,
        },
        "functions": {"endpoint_url": record.runtime_url, "names": list(record.functions)},
        "aws": {"endpoint_url": record.aws_url, "services": ["Secrets Manager", "CloudWatch"]},
        "state_dir": str(plan.paths.root),
    }


def where_table(plan: StackPlan, record: StackRecord, title: str) -> Table:
    where = addresses(plan, record)
    db, pooler, functions, aws = (
        where["database"],
        where["pooler"],
        where["functions"],
        where["aws"],
    )
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_row(
        "database",
        f"{db['host']}:{db['port']} (max_connections {db['max_connections']}, TLS)",
    )
    if "reader" in where:
        reader = where["reader"]
        table.add_row("reader", f"{reader['host']}:{reader['port']} (streaming replica, read pool)")
    table.add_row(
        "pooler",
        f"{pooler['host']}:{pooler['port']} ({pooler['processes']} PgBouncer "
        f"processes, ceiling {pooler['ceiling']})",
    )
    table.add_row(
        "functions", Text(f"{functions['endpoint_url']} ({', '.join(functions['names'])})")
    )
    table.add_row("AWS APIs", f"{aws['endpoint_url']} ({', '.join(aws['services'])})")
    table.add_row("state", Text(where["state_dir"]))
    return table


def down_command(stack: StackOption = "dev", project_dir: ProjectDirOption = None) -> None:
    """Stop everything the stack started on this machine (its data is kept)."""
    plan = load_plan(stack, project_dir)
    result = down(plan)
    if not result.was_running:
        console.print(f"stack [bold]{stack}[/] was not running")
        return
    note = f" (killed leftovers {result.leftovers_killed})" if result.leftovers_killed else ""
    console.print(f"stack [bold]{stack}[/] stopped{plain(note)}")


def status_command(
    stack: StackOption = "dev",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the same as one JSON document on stdout.")
    ] = False,
    project_dir: ProjectDirOption = None,
) -> None:
    """Where the stack listens, health, connections against max_connections, pools and alarms."""
    plan = load_plan(stack, project_dir)
    try:
        report = status(plan)
    except StackError as exc:
        if as_json:
            typer.echo(json.dumps({"stack": stack, "running": False, "error": str(exc)}))
        else:
            console.print(f"[red]{plain(exc)}[/]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(status_document(plan, report), indent=2, default=str))
        return
    console.print(where_table(plan, report.record, f"stack {stack}"))
    print_status(report, console)


def status_document(plan: StackPlan, report: StatusReport) -> dict[str, Any]:
    """`status --json`: the addresses `up` prints and everything the status tables show."""
    return {
        "stack": plan.stack,
        "running": True,
        **addresses(plan, report.record),
        "health": {"status": report.health_status, "body": report.health_body},
        "database_connections": {
            "total": report.db_connections,
            "max_connections": report.max_connections,
            "pooler_ceiling": report.ceiling,
            "by_application": report.by_application,
        },
        "pools": report.pools,
        "alarms": report.alarms,
        "function_stats": report.functions,
    }


def print_status(report: StatusReport, out: Console) -> None:
    health = report.health_body
    colour = "green" if report.health_status == 200 else "red"
    out.print(
        f"health: [{colour}]{report.health_status or 'error'} {plain(health.get('status', ''))}[/]"
        + (f" ({health['reason']})" if "reason" in health else "")
    )
    used = "-" if report.db_connections is None else str(report.db_connections)
    out.print(
        f"database connections: {used} / max_connections {report.max_connections} "
        f"(pooler ceiling {report.ceiling})  "
        + ", ".join(f"{name} {n}" for name, n in report.by_application.items())
    )
    pools = Table(title="pooler pools (SHOW POOLS)", title_justify="left")
    columns = [
        "process",
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_used",
        "maxwait",
    ]
    for column in columns:
        pools.add_column(column, justify="right" if column not in {"database", "user"} else "left")
    for pool in report.pools:
        pools.add_row(*(Text(str(pool.get(column, ""))) for column in columns))
    out.print(pools)
    alarms = Table(title="alarms", title_justify="left")
    for column in ("alarm", "state", "value", "threshold", "fired"):
        alarms.add_column(column)
    for alarm in report.alarms:
        state = alarm["state"]
        alarms.add_row(
            alarm["key"],
            f"[red]{state}[/]" if state == "ALARM" else f"[green]{state}[/]",
            "-" if alarm["value"] is None else f"{alarm['value']:g}",
            f"{alarm['threshold']:g}",
            str(alarm["times_fired"]),
        )
    out.print(alarms)
    if report.functions:
        functions = Table(title="functions", title_justify="left")
        for column in (
            "function",
            "instances",
            "busy",
            "frozen",
            "invocations",
            "cold starts",
            "throttles",
            "errors",
        ):
            functions.add_column(column, justify="right" if column != "function" else "left")
        for name, stats in sorted(report.functions.items()):
            functions.add_row(
                name,
                str(stats.get("instances", 0)),
                str(stats.get("busy", 0)),
                str(stats.get("frozen", 0)),
                str(stats.get("invocations", 0)),
                str(stats.get("cold_starts", 0)),
                str(stats.get("throttles", 0)),
                str(stats.get("errors", 0)),
            )
        out.print(functions)
