"""`slotguard verify`: after `pulumi up`, check the deployed stack works; exit 1 on a failure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.budget import compute_budget
from slotguard.aws.checks import render
from slotguard.aws.outputs import OutputsError, read_outputs
from slotguard.aws.verify import Verify
from slotguard.commands.common import ProjectDirOption, plain, project_root
from slotguard.commands.preflight import load, session_clients
from slotguard.commands.storm import EventOption, FunctionOption
from slotguard.storm.client import lambda_client

EXIT_FAILED = 1


def verify(  # every option is keyword-only: Typer reads them by name
    *,
    stack: Annotated[str, typer.Option(help="Stack name: reads Pulumi.<stack>.yaml.")] = "dev",
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs",
            help="The stack's outputs as `pulumi stack output --json --show-secrets` wrote them "
            "(default: ask the Pulumi CLI).",
        ),
    ] = None,
    storm: Annotated[
        bool, typer.Option(help="Finish with a small storm through the deployed API.")
    ] = True,
    burst: Annotated[
        int | None,
        typer.Option(min=1, max=20000, help="Storm burst (default: sized to the stack)."),
    ] = None,
    function: FunctionOption = None,
    event: EventOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Check the deployed stack through AWS and its own functions; exit 1 if a check fails."""
    console = Console(width=max(Console().width, 160))
    err = Console(stderr=True)
    root = project_root(project_dir)
    settings = load(stack, root, err)
    try:
        stack_outputs = read_outputs(stack, outputs_file=outputs)
    except OutputsError as error:
        err.print(
            f"[red bold]cannot verify stack '{plain(stack)}':[/] {plain(error)}", highlight=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    client, region = session_clients(settings.region)
    checks = Verify(
        settings=settings,
        budget=compute_budget(settings),
        outputs=stack_outputs,
        client=client,
        region=region,
        storm=storm,
        burst=burst,
        storm_client=lambda size: lambda_client(region_name=region or "", pool_size=size),
        storm_function=function,
        storm_event=event,
    ).run()
    console.print(render(checks, f"verify of stack '{stack}' ({region or 'no region'})"))
    failures = [c for c in checks if c.failed]
    if failures:
        console.print(f"[red bold]{len(failures)} check(s) failed[/]")
        raise typer.Exit(EXIT_FAILED)
    console.print("[green]the deployed stack works[/]")
