"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

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


def plain(value: object) -> str:
    """`value` as literal text inside Rich markup: `[a-z]` in a message stays `[a-z]`.

    Messages carry patterns, paths and lists in square brackets, which Rich would otherwise
    read as style tags and drop; the terminal must show what `--json` carries.
    """
    return escape(str(value))
