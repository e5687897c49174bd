"""`slotguard budget`: every derived number of a stack, where it came from, and its headroom."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infra.budget import Budget, BudgetError, compute_budget
from infra.handlers import HandlerError, check_handlers
from infra.lifecycle import DeployedDatabase, plan_lines
from infra.lifecycle import plan as lifecycle_plan
from infra.settings import SettingsError, load_stack
from slotguard.commands.common import ProjectDirOption, plain, project_root

EXIT_INVALID = 2


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_table(budget: Budget) -> Table:
    """The budget as a Rich table, one row per derived figure."""
    table = Table(title=f"connection budget of stack '{budget.stack}' ({budget.pooler_kind})")
    # A figure's name is what a user greps for and looks up: never cut it short.
    table.add_column("figure", style="bold", no_wrap=True, overflow="fold", min_width=20)
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("from")
    table.add_column("limit", justify="right")
    table.add_column("headroom", justify="right")
    for fig in budget.figures:
        headroom = fig.headroom
        style = "red" if headroom is not None and headroom < 0 else None
        table.add_row(
            Text(fig.key),
            _number(fig.value),
            Text(fig.unit),
            Text(fig.source),
            Text(f"{_number(fig.limit)} ({fig.limit_source})") if fig.limit is not None else "",
            _number(round(headroom, 3)) if headroom is not None else "",
            style=style,
        )
    return table


def budget(
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    project_dir: ProjectDirOption = None,
    running_major: Annotated[
        int | None,
        typer.Option(
            help="The major the deployed instance runs: the report then plans the upgrade from "
            "it to database.engine_version (path, downtime, each pooler's part).",
        ),
    ] = None,
) -> None:
    """Show the connection budget of a stack; exit 2 with the errors when it does not hold."""
    console = Console(width=max(Console().width, 150))
    err = Console(stderr=True, width=max(Console().width, 150))
    try:
        settings = load_stack(stack, project_root(project_dir))
        result = compute_budget(settings)
        check_handlers(settings)
    except (SettingsError, BudgetError) as error:
        problems = (
            error.problems
            if isinstance(error, SettingsError)
            else [str(v) for v in error.violations]
        )
        if as_json:
            print(json.dumps({"ok": False, "stack": stack, "errors": problems}, indent=2))
        else:
            kind = "settings" if isinstance(error, SettingsError) else "budget"
            heading = (
                "a handler is not in the package"
                if isinstance(error, HandlerError)
                else f"the {kind} does not hold"
            )
            err.print(f"[red bold]stack '{plain(stack)}': {heading}[/red bold]")
            for problem in problems:
                err.print(f"  [red]-[/red] {plain(problem)}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    deployed = (
        DeployedDatabase(
            identifier="(running)",
            engine_version=str(running_major),
            db_name=settings.database.name,
            storage_encrypted=True,
            username="postgres",
        )
        if running_major is not None
        else None
    )
    lifecycle = lifecycle_plan(settings, deployed)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": True,
                    **result.to_json(),
                    "lifecycle": {
                        "path": lifecycle.path,
                        "upgrade_path": lifecycle.upgrade_path,
                        "downtime": lifecycle.downtime,
                        "steps": list(lifecycle.steps),
                        "poolers": lifecycle.poolers,
                        "refusals": list(lifecycle.refusals),
                    },
                },
                indent=2,
            )
        )
        return
    console.print(render_table(result))
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow]: {plain(warning)}", highlight=False)
    for line in deploy_plan_lines(result):
        console.print(line, highlight=False)  # numbers only; the heading is markup
    for line in plan_lines(lifecycle):
        console.print(line, highlight=False, markup=False)
    console.print(
        f"[green]budget holds[/green]: at most {result.pooler_server_connections} pooler "
        f"connections of {result.max_connections} in steady state, "
        f"{result.pooler_planned_max} at a deploy's or scale-out's peak (ceiling "
        f"{result.pooler_ceiling}, limit {result.pooler_limit})"
    )


def deploy_plan_lines(result: Budget) -> list[str]:
    """The PgBouncer service's rolling deploy and scaling, step by step, from the budget."""
    pb = result.pgbouncer
    if pb is None:
        return []
    d = pb.deploy
    per_task = pb.server_connections_per_task
    surge = (
        f"ECS starts {d.surge_tasks} new task(s) beside the running ones "
        f"(maximumPercent {d.maximum_percent}, minimumHealthyPercent 100)"
        if d.surge_tasks
        else f"ECS stops one task first (maximumPercent 100, minimumHealthyPercent "
        f"{d.minimum_healthy_percent}): one task less serves during the deploy"
    )
    scaling = (
        f"target tracking keeps average CPU at {d.cpu_target_percent}% between {d.min_tasks} "
        f"and {d.max_tasks} tasks ({d.server_connections_min} to {d.server_connections_max} "
        f"server connections; the pool would be {d.pool_size_if_fixed} per process instead of "
        f"{pb.pool_size} without scaling)"
        if d.scales
        else f"fixed at {d.min_tasks} tasks (set pooler.pgbouncer.max_tasks to scale on CPU)"
    )
    return [
        "[bold]deploy plan[/bold] (pgbouncer):",
        f"  1. {surge}; each new task passes the NLB health check.",
        f"  2. A stopping task leaves the NLB for {d.deregistration_delay_s} s "
        "(deregistration delay): new connections go to the other tasks.",
        f"  3. ECS sends SIGTERM; the entrypoint sends PgBouncer SIGINT (safe shutdown): each "
        f"running transaction finishes (the longest {d.longest_transaction_s} s, within "
        f"{d.drain_timeout_s} s of the {d.stop_timeout_s} s stop timeout), its client is "
        "disconnected and reconnects to a new task.",
        f"  4. At most {d.peak_tasks} tasks x {per_task} = {d.server_connections_peak} server "
        f"connections at once, within the limit {result.pooler_limit}; a deploy takes at most "
        f"{d.deploy_worst_s} s.",
        f"  Scaling: {scaling}.",
    ]
