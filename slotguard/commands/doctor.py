"""`slotguard doctor`: check (and install) the system programs the local target runs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from slotguard.local.system import (
    MissingSystemPackageError,
    ensure_programs,
    pgbouncer_binary,
    postgres_bindir,
)


def doctor(
    install: Annotated[
        bool, typer.Option(help="Install missing packages with apt-get when running as root.")
    ] = False,
) -> None:
    """Report where PostgreSQL and PgBouncer are; install them with --install when missing."""
    console = Console()
    try:
        ensure_programs(install=install)
    except MissingSystemPackageError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    console.print(f"postgresql: {postgres_bindir()}")
    console.print(f"pgbouncer:  {pgbouncer_binary()}")
