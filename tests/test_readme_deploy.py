"""The README's deploy section gives a newcomer the four steps in order."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from slotguard.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def deploy_section() -> str:
    return README.split("### Deploy", 1)[1].split("\n### ", 1)[0]


def test_deploy_section_orders_preflight_preview_up_verify() -> None:
    section = deploy_section()
    steps = [
        re.search(pattern, section, re.M)
        for pattern in (
            r"^slotguard preflight --stack",
            r"^pulumi preview",
            r"^pulumi up",
            r"^slotguard verify --stack",
        )
    ]
    assert all(steps), steps
    starts = [m.start() for m in steps if m is not None]
    assert starts == sorted(starts)


def test_the_documented_commands_exist() -> None:
    for command in ("preflight", "verify"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--stack" in result.output
    assert "--outputs" in CliRunner().invoke(app, ["verify", "--help"]).output
