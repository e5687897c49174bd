"""`slotguard check`: everything about a fork's own stack that can be checked offline, at once.

The settings, the connection budget, every function's handler in what will be packaged, the
stack's storm function and its sample event, then the Pulumi program run under mocks and the
policy pack over what it registered. No AWS account, no Pulumi CLI, no Docker: what a team runs
on its own stack before `pulumi preview` (the kit's tests check the kit, this checks the stack).
"""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from infra.budget import BudgetError, compute_budget
from infra.handlers import HandlerError, check_handlers
from infra.settings import SettingsError, load_stack
from policy.offline import check_stack
from policy.report import render
from slotguard.commands.common import ProjectDirOption, plain, project_root
from slotguard.storm.traffic import TrafficError, choose_traffic

EXIT_INVALID = 2


def _problems(error: Exception) -> list[str]:
    if isinstance(error, SettingsError):
        return list(error.problems)
    if isinstance(error, BudgetError):
        return [str(v) for v in error.violations]
    return [str(error)]


def check(
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    project_dir: ProjectDirOption = None,
) -> None:
    """Check a stack offline: settings, budget, handlers, storm event, program and policy pack."""
    console = Console(width=max(Console().width, 120))
    root = project_root(project_dir)
    steps: list[dict[str, object]] = []

    def fail(step: str, error: Exception) -> NoReturn:
        problems = _problems(error)
        steps.append({"step": step, "ok": False, "errors": problems})
        if as_json:
            print(json.dumps({"ok": False, "stack": stack, "steps": steps}, indent=2))
        else:
            console.print(f"[red bold]stack '{plain(stack)}': {step} failed[/]")
            for problem in problems:
                console.print(f"  [red]-[/red] {plain(problem)}", highlight=False)
        raise typer.Exit(EXIT_INVALID)

    def passed(step: str, detail: str) -> None:
        steps.append({"step": step, "ok": True, "detail": detail})
        if not as_json:
            console.print(f"[green]ok[/] {step}: {plain(detail)}", highlight=False)

    try:
        settings = load_stack(stack, root)
    except SettingsError as error:
        fail("settings", error)
    passed("settings", f"Pulumi.{stack}.yaml, {len(settings.functions)} functions")
    try:
        budget = compute_budget(settings)
    except BudgetError as error:
        fail("budget", error)
    passed(
        "budget",
        f"{budget.pooler_server_connections} pooler connections of {budget.max_connections}",
    )
    try:
        check_handlers(settings)
    except HandlerError as error:
        fail("handlers", error)
    passed("handlers", ", ".join(f.handler for f in settings.functions.values()))
    try:
        traffic = choose_traffic(settings)
        passed("storm event", f"{traffic.function} with {traffic.source}")
    except TrafficError as error:  # a note, not a failure: `--event` can still be given
        steps.append({"step": "storm event", "ok": True, "detail": str(error)})
        if not as_json:
            console.print(f"[yellow]note[/] storm event: {plain(error)}", highlight=False)
    try:
        report = check_stack(stack, root)
    except (SettingsError, BudgetError) as error:
        fail("program", error)
    steps.append(
        {
            "step": "program and policy pack",
            "ok": not report.mandatory,
            "policy": report.to_json(),
        }
    )
    if as_json:
        print(json.dumps({"ok": not report.mandatory, "stack": stack, "steps": steps}, indent=2))
    else:
        for line in render(report).splitlines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)
