"""`slotguard preflight`: the preconditions of `pulumi up`, checked read-only; exit 2 on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import boto3
import typer
import yaml
from rich.console import Console

from infra.budget import BudgetError, compute_budget
from infra.handlers import check_handlers
from infra.settings import SettingsError, StackSettings, load_stack, stack_file
from slotguard.aws.checks import render
from slotguard.aws.preflight import ClientFactory, Preflight
from slotguard.commands.common import ProjectDirOption, plain, project_root

EXIT_FAILED = 2


def session_clients(region: str | None) -> tuple[ClientFactory, str | None]:
    """boto3 clients for the stack's region (else the default chain's region)."""
    session = boto3.Session(region_name=region)
    client: Any = session.client  # one overload per service: any name goes here
    return client, session.region_name


def prebuilt_image(stack: str, root: Path) -> str | None:
    """`pgbouncer:image` from the stack file: an image built elsewhere needs no Docker here."""
    document: Any = yaml.safe_load(stack_file(stack, root).read_text()) or {}
    config = document.get("config") or {} if isinstance(document, dict) else {}
    image = config.get("pgbouncer:image") if isinstance(config, dict) else None
    return str(image) if image else None


def load(stack: str, root: Path, err: Console) -> StackSettings:
    try:
        settings = load_stack(stack, root)
        compute_budget(settings)
        check_handlers(settings)
    except (SettingsError, BudgetError) as error:
        problems = (
            error.problems
            if isinstance(error, SettingsError)
            else [str(v) for v in error.violations]
        )
        err.print(f"[red bold]stack '{plain(stack)}': fix the settings first[/red bold]")
        for problem in problems:
            err.print(f"  [red]-[/red] {plain(problem)}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    return settings


def preflight(
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    image: Annotated[
        str | None,
        typer.Option(help="A prebuilt pooler image (default: pgbouncer:image of the stack)."),
    ] = None,
    deployed: Annotated[
        bool,
        typer.Option(
            "--deployed",
            help="The stack is already deployed: its fixed names are its own, not leftovers.",
        ),
    ] = False,
    project_dir: ProjectDirOption = None,
) -> None:
    """Check the account and this machine before `pulumi up`; exit 2 if a check fails."""
    console = Console(width=max(Console().width, 160))
    root = project_root(project_dir)
    settings = load(stack, root, Console(stderr=True))
    client, region = session_clients(settings.region)
    checks = Preflight(
        settings=settings,
        budget=compute_budget(settings),
        client=client,
        region=region,
        prebuilt_image=image or prebuilt_image(stack, root),
        deployed=deployed,
    ).run()
    console.print(render(checks, f"preflight of stack '{stack}' ({region or 'no region'})"))
    failures = [c for c in checks if c.failed]
    if failures:
        console.print(f"[red bold]{len(failures)} check(s) failed[/]: fix them before pulumi up")
        raise typer.Exit(EXIT_FAILED)
    console.print("[green]preflight passed[/]: next, `pulumi preview`, then `pulumi up`")
