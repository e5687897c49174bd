"""Every command shows a message's text exactly as `--json` carries it: `[...]` is not markup.

Rich reads `[a-z]` in a printed string as a style tag and drops it, so a pattern error would lose
its brackets in the terminal; each command is run on a stack whose settings error holds some.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from slotguard.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def bracketed(tmp_path: Path) -> Path:
    """A project whose stack `bad` has a function name that breaks the name pattern."""
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    document["config"]["slotguard:functions"] = {
        "Users_Svc": {"handler": "functions.api.handler"},
    }
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def _flat(text: str) -> str:
    return " ".join(text.split())


def _expected(root: Path) -> list[str]:
    result = runner.invoke(app, ["budget", "--stack", "bad", "--json", "--project-dir", str(root)])
    errors: list[str] = json.loads(result.stdout)["errors"]
    assert any("[key]" in e and "'^[a-z][a-z0-9-]{0,39}$'" in e for e in errors), errors
    return errors


COMMANDS = [
    ["budget"],
    ["policy"],
    ["up"],
    ["down"],
    ["status"],
    ["storm"],
    ["drill", "all"],
    ["preflight"],
    ["verify"],
    ["doctor"],
    ["check"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_each_command_prints_the_json_text_of_a_bracketed_error(
    bracketed: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLOTGUARD_PGBOUNCER_VERSION", raising=False)
    expected = _expected(bracketed)
    result = runner.invoke(app, [*command, "--stack", "bad", "--project-dir", str(bracketed)])
    assert result.exit_code != 0, result.output
    shown = _flat(result.output)
    for error in expected:
        assert _flat(error) in shown, f"{command}: {error!r} not shown as is in:\n{result.output}"
