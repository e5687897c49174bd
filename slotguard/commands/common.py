"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

KIT_ROOT = Path(__file__).resolve().parents[2]

ProjectDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Directory holding Pulumi.yaml and the Pulumi.<stack>.yaml files "
        "(default: the current directory if it is a project, else the kit's own).",
    ),
]


def project_root(project_dir: Path | None) -> Path:
    """Where the stack files are: explicit, the current Pulumi project, or the kit itself."""
    if project_dir is not None:
        return project_dir
    cwd = Path.cwd()
    return cwd if (cwd / "Pulumi.yaml").exists() else KIT_ROOT
