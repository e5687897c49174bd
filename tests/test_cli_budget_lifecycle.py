"""`slotguard budget` states how a major upgrade would reach each example stack, and its cost."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from slotguard.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def budget(*args: str) -> str:
    result = runner.invoke(app, ["budget", *args, "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_dev_says_a_major_upgrade_goes_in_place() -> None:
    text = budget("--stack", "dev")
    assert "no major change; a major upgrade would go in-place" in text


def test_dev_upgrade_from_the_running_major_states_downtime_and_pgbouncers_part() -> None:
    text = budget("--stack", "dev", "--running-major", "15")
    assert "major upgrade 15 -> 16 via in-place" in text
    assert "unavailable for the whole upgrade, at once" in text
    assert "postgres16" in text
    assert "postgres15" in text
    assert "pgbouncer: server logins fail" in text


def test_prod_upgrade_plans_blue_green_and_names_what_blocks_it() -> None:
    result = runner.invoke(
        app,
        [
            "budget",
            "--stack",
            "prod",
            "--json",
            "--running-major",
            "15",
            "--project-dir",
            str(ROOT),
        ],
    )
    data = json.loads(result.output)["lifecycle"]
    assert data["path"] == "blue-green"
    assert "drops its client connections" in data["poolers"]["rds-proxy"]
    assert any("Secrets Manager" in r for r in data["refusals"])
