"""`slotguard doctor`: check (and install) the system programs the local target runs."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from infra.settings import SettingsError, load_stack, stack_file
from slotguard.commands.common import ProjectDirOption, plain, project_root
from slotguard.local.pgbouncer_build import binary_version, build_source
from slotguard.local.system import (
    PGBOUNCER_VERSION_ENV,
    MissingSystemPackageError,
    ensure_programs,
    pgbouncer_binary,
    pinned_pgbouncer_version,
    postgres_bindir,
)


def doctor(
    install: Annotated[
        bool,
        typer.Option(
            help="Install missing packages with apt-get, and build the stack's pinned PgBouncer "
            "release when the machine's is older, when running as root."
        ),
    ] = False,
    stack: Annotated[
        str, typer.Option(help="The stack whose pooler.pgbouncer.version to rehearse.")
    ] = "dev",
    project_dir: ProjectDirOption = None,
) -> None:
    """Report where PostgreSQL and PgBouncer are; install (or build) them with --install."""
    console = Console()
    root = project_root(project_dir)
    if stack_file(stack, root).exists() and not os.environ.get(PGBOUNCER_VERSION_ENV):
        try:
            os.environ[PGBOUNCER_VERSION_ENV] = load_stack(stack, root).pooler.pgbouncer.version
        except SettingsError as error:
            console.print(f"[red]{plain(error)}[/red]")
            raise typer.Exit(2) from error
    try:
        ensure_programs(install=install)
    except MissingSystemPackageError as error:
        console.print(f"[red]{plain(error)}[/red]")
        raise typer.Exit(2) from error
    binary = pgbouncer_binary()
    found = binary_version(binary) if binary is not None else None
    console.print(f"postgresql: {plain(postgres_bindir())}")
    pinned = pinned_pgbouncer_version()
    console.print(plain(f"pgbouncer:  {binary} (PgBouncer {found}; the stack pins {pinned})"))
    source = build_source(binary) if binary is not None else None
    if source:
        console.print(f"            built from {plain(source)}")
