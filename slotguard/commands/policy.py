"""`slotguard policy`: the pack's verdict on a stack, offline, in `pulumi preview`'s shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.budget import BudgetError
from infra.settings import SettingsError
from policy.offline import check_stack, load_pack_config
from policy.report import EXIT_VIOLATION, render
from policy.rules import RuleConfigError
from slotguard.commands.common import ProjectDirOption, plain, project_root


def _errors(error: Exception) -> tuple[str, list[str]]:
    if isinstance(error, SettingsError):
        return "settings", list(error.problems)
    if isinstance(error, BudgetError):
        return "budget", [str(v) for v in error.violations]
    return "policy config", [str(error)]


def policy(
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Policy config file (JSON or YAML), as for `pulumi preview --policy-pack-config`.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Run the stack's program offline and every policy over it; exit 2 on a mandatory violation."""
    console = Console(width=max(Console().width, 120))
    err = Console(stderr=True, width=max(Console().width, 120))
    try:
        pack_config = load_pack_config(config) if config is not None else None
        report = check_stack(stack, project_root(project_dir), pack_config)
    except (SettingsError, BudgetError, RuleConfigError) as error:
        kind, problems = _errors(error)
        if as_json:
            print(json.dumps({"ok": False, "stack": stack, "errors": problems}, indent=2))
        else:
            err.print(f"[red bold]stack '{plain(stack)}': the {kind} does not hold[/red bold]")
            for problem in problems:
                err.print(f"  [red]-[/red] {problem}", highlight=False, markup=False)
        raise typer.Exit(EXIT_VIOLATION) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        style = "red" if report.mandatory else ("yellow" if report.violations else "green")
        for line in render(report).splitlines():
            console.print(
                line,
                style=style if line.startswith("        - ") else None,
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    raise typer.Exit(report.exit_code)
