"""`slotguard storm`: burst a stack's functions and report, wiring by wiring, side by side."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from slotguard.commands.common import ProjectDirOption, plain
from slotguard.commands.local import load_plan
from slotguard.local.control import StackError
from slotguard.local.targets import (
    WIRINGS,
    StormTarget,
    TargetError,
    WiringName,
    aws_target,
    local_target,
)
from slotguard.storm import StormReport, run_storm
from slotguard.storm.chart import write_chart
from slotguard.storm.report import storm_table
from slotguard.storm.traffic import TrafficError, choose_traffic

FunctionOption = Annotated[
    str | None,
    typer.Option(
        "--function",
        help="The stack's function to burst (default: the stack's storm_function, else its "
        "first); its direct and naive variants are derived from it.",
    ),
]
EventOption = Annotated[
    Path | None,
    typer.Option(
        "--event",
        help="A JSON event file (default: the function's sample event, "
        "functions/<module>.event.json); `{index}` in a string becomes the invocation's number.",
        dir_okay=False,
    ),
]

console = Console(width=max(Console().width, 120))


class Target(StrEnum):
    LOCAL = "local"
    AWS = "aws"


class WiringChoice(StrEnum):
    POOLED = "pooled"
    DIRECT = "direct"
    NAIVE = "naive"
    ALL = "all"


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


def storm(  # every option is keyword-only: Typer reads them by name
    *,
    stack: Annotated[str, typer.Option(help="Stack name.")] = "dev",
    target: Annotated[Target, typer.Option(help="The running local stack or the deployed one.")] = (
        Target.LOCAL
    ),
    burst: Annotated[int, typer.Option(min=1, max=20000, help="Concurrent invocations.")] = 1000,
    wiring: Annotated[
        WiringChoice,
        typer.Option(help="pooled (through the pooler), direct, naive (direct, no retries), all."),
    ] = WiringChoice.ALL,
    retries: Annotated[Switch, typer.Option(help="The helper's connect retries.")] = Switch.ON,
    query_ms: Annotated[
        int, typer.Option(min=0, max=60000, help="Hold each connection this long (0: the API).")
    ] = 0,
    frozen: Annotated[
        int, typer.Option(min=0, help="Frozen instances left holding connections first.")
    ] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write the PNG chart here.")] = None,
    warm: Annotated[
        bool, typer.Option(help="Local: give each function BURST warm instances first.")
    ] = True,
    check: Annotated[
        bool,
        typer.Option(help="Exit 1 if a pooled invocation failed or its peak passed the ceiling."),
    ] = False,
    function: FunctionOption = None,
    event: EventOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Burst the stack's functions and report outcomes, latency and database connections."""
    wirings: list[WiringName] = list(WIRINGS) if wiring is WiringChoice.ALL else [wiring.value]  # type: ignore[list-item]
    try:
        storm_target = _target(
            stack=stack,
            target=target,
            wirings=wirings,
            burst=burst,
            retries=retries is Switch.ON,
            query_ms=query_ms,
            frozen=frozen,
            warm=warm,
            project_dir=project_dir,
            function=function,
            event=event,
        )
    except (TargetError, StackError, TrafficError) as exc:
        console.print(f"[red]error:[/] {plain(exc)}")
        raise typer.Exit(1) from None
    try:
        report = run_target(
            storm_target,
            burst,
            console=console,
            settings={
                "target": storm_target.name,
                "retries": retries.value,
                "query_ms": query_ms,
                "frozen": frozen,
                "warm": warm,
            },
        )
    except TargetError as exc:
        console.print(f"[red]error:[/] {plain(exc)}")
        raise typer.Exit(1) from None
    finally:
        storm_target.close()
    # A wiring that could not run is the first thing said, on one line each, and the exit
    # status says it too: an empty table with exit 0 would read as a storm survived.
    for name, why in report.skipped.items():
        console.print(f"[red]error: {name} not run:[/] {plain(why)}")
    if not report.wirings:
        raise typer.Exit(1)
    console.print(storm_table(report.wirings, title=f"storm {storm_target.name}, burst {burst}"))
    for note in storm_target.notes:
        console.print(f"[dim]{plain(note)}[/]")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        report.write_json(json_path)
        console.print(f"JSON: {plain(json_path)}")
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
        write_chart(report.wirings, chart, title=f"storm {storm_target.name}, burst {burst}")
        console.print(f"chart: {plain(chart)}")
    if check:
        problems = pooled_problems(report)
        for problem in problems:
            console.print(f"[red]check failed:[/] {plain(problem)}")
        if problems:
            raise typer.Exit(1)
    if report.skipped:
        raise typer.Exit(1)


def _target(
    *,
    stack: str,
    target: Target,
    wirings: list[WiringName],
    burst: int,
    retries: bool,
    query_ms: int,
    frozen: int,
    warm: bool,
    project_dir: Path | None,
    function: str | None = None,
    event: Path | None = None,
) -> StormTarget:
    if target is Target.AWS:
        if query_ms or frozen or not retries:
            raise TargetError(
                "--query-ms, --frozen and --retries off need the local target's extra functions"
            )
        plan = load_plan(stack, project_dir)
        traffic = choose_traffic(plan.settings, function, event)
        return aws_target(stack, wirings, burst=burst, region=plan.region, traffic=traffic)
    plan = load_plan(stack, project_dir)
    needs_event = query_ms == 0 or frozen > 0
    return local_target(
        plan,
        wirings,
        burst=burst,
        traffic=choose_traffic(plan.settings, function, event) if needs_event else None,
        retries=retries,
        query_ms=query_ms,
        frozen=frozen,
        warm=warm,
        say=lambda message: console.print(f"[dim]{plain(message)}[/]"),
    )


def run_target(
    target: StormTarget,
    burst: int,
    *,
    console: Console | None = None,
    show_progress: bool = True,
    settings: dict[str, object] | None = None,
) -> StormReport:
    """Run the storm on a prepared target (shared by the command, `make up` and the benchmarks)."""
    return run_storm(
        target.wirings,
        burst,
        observer=target.observer,
        limits=target.limits,
        before_each=target.before_each,
        alarms=target.alarms,
        console=console,
        show_progress=show_progress,
        settings=settings,
    )


def pooled_problems(report: StormReport) -> list[str]:
    """What makes a pooled run a failure: any failed invocation, a peak above ceiling + margin."""
    problems = []
    if "pooled" in report.skipped:
        problems.append(f"the pooled wiring did not run: {report.skipped['pooled']}")
    for result in report.wirings:
        if result.wiring != "pooled":
            continue
        if result.failed_total:
            problems.append(f"{result.failed_total} pooled invocations failed: {result.failed}")
        if result.within_ceiling is False:
            problems.append(
                f"pooled peak of {result.peak_db_connections} database connections exceeds the "
                "ceiling plus the admin margin"
            )
    return problems
