"""`slotguard drill`: inject a real fault into the running local stack during a write storm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from slotguard.commands.common import ProjectDirOption, plain
from slotguard.commands.local import load_plan
from slotguard.drills import SCENARIOS, DrillResult, StackHandle, drill_table, run_drill, write_json
from slotguard.drills.runner import DrillError
from slotguard.drills.workloads import NAME as WORKLOADS
from slotguard.drills.workloads import run_workloads_drill
from slotguard.local.control import StackError, require_running, up

console = Console(width=max(Console().width, 120))
ALL = "all"


def drill(
    scenario: Annotated[
        str,
        typer.Argument(
            help=f"One of: {', '.join(SCENARIOS)}, or {ALL} (in that order); or {WORKLOADS} "
            "(a stack with two workloads, e.g. --stack workloads)."
        ),
    ],
    *,
    stack: Annotated[str, typer.Option(help="Stack name.")] = "dev",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
    small: Annotated[
        bool, typer.Option(help="Smaller storms and bursts (what the tests run).")
    ] = False,
    start: Annotated[
        bool, typer.Option("--up/--no-up", help="Bring the stack up first if it is not running.")
    ] = False,
    function: Annotated[
        str | None,
        typer.Option(
            help="The function the write storm goes through (default: the stack's "
            "storm_function, else its first); it must answer POST /items like functions/api.py."
        ),
    ] = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Run fault drills: a write storm, a fault, then every acknowledged write reconciled."""
    names = list(SCENARIOS) if scenario == ALL else [scenario]
    unknown = [n for n in names if n not in SCENARIOS and n != WORKLOADS]
    if unknown:
        choices = f"no drill {unknown[0]!r}; choose one of {', '.join(SCENARIOS)} or {ALL}"
        console.print(f"[red]error:[/] {plain(choices)}")
        raise typer.Exit(2)
    plan = load_plan(stack, project_dir)
    try:
        if start:
            with console.status(f"starting stack {stack}") as spinner:
                record = up(plan, progress=lambda m: spinner.update(plain(m))).record
        else:
            record = require_running(plan)
    except StackError as exc:
        console.print(f"[red]error:[/] {plain(exc)}")
        raise typer.Exit(1) from None
    handle = StackHandle(plan, record)
    results: list[DrillResult] = []
    for name in names:
        try:
            if name == WORKLOADS:
                with console.status(f"drill {name}: slow workload saturated, fast one stormed"):
                    result = run_workloads_drill(handle, small=small)
            else:
                with console.status(f"drill {name}: {SCENARIOS[name].description}"):
                    result = run_drill(handle, SCENARIOS[name], small=small, function=function)
        except DrillError as exc:
            console.print(f"[red]error:[/] drill {name}: {plain(exc)}")
            raise typer.Exit(2) from None
        mark = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
        console.print(f"drill {name}: {mark}")
        results.append(result)
    console.print(drill_table(results))
    if json_path is not None:
        console.print(f"JSON: {plain(write_json(results, json_path))}")
    failed = [r.scenario for r in results if not r.passed]
    if failed:
        console.print(f"[red]targets missed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
