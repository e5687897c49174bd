"""`slotguard policy`: a clean report and exit 0 for the shipped stacks, the violations and exit 2
for a broken one, exit 2 with the message for settings the budget refuses."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from slotguard.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def write_stack(directory: Path, name: str, edit) -> Path:
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    edit(document["config"])
    (directory / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return directory


def test_dev_is_clean():
    result = runner.invoke(app, ["policy", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "✅ slotguard@v0.1.0" in result.output
    assert "0 violation(s) (0 mandatory) of 12 policies" in result.output


def test_prod_json_is_clean():
    result = runner.invoke(app, ["policy", "--stack", "prod", "--json", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True
    assert data["violations"] == []
    assert len(data["policies"]) == 12


def test_broken_stack_prints_the_violation_and_exits_2(scratch_dir):
    def edit(config):
        config["slotguard:pooler"]["pgbouncer"]["client_idle_timeout_s"] = 330

    write_stack(scratch_dir, "reaping", edit)
    result = runner.invoke(app, ["policy", "--stack", "reaping", "--project-dir", str(scratch_dir)])
    assert result.exit_code == 2, result.output
    assert "❌ slotguard@v0.1.0" in result.output
    assert (
        "[mandatory]  idle-client-reaping  (aws:ecs/taskDefinition:TaskDefinition:" in result.output
    )
    assert "PGBOUNCER_CLIENT_IDLE_TIMEOUT_S 330 s" in result.output
    assert "1 violation(s) (1 mandatory)" in result.output


def test_config_file_makes_a_policy_advisory(scratch_dir):
    config = scratch_dir / "policy.json"
    config.write_text(
        json.dumps(
            {"app-user-timeouts": {"enforcementLevel": "advisory", "maxStatementTimeoutMs": 100}}
        )
    )
    result = runner.invoke(
        app,
        ["policy", "--stack", "dev", "--json", "--config", str(config), "--project-dir", str(ROOT)],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(v["policy"], v["enforcement_level"]) for v in data["violations"]] == [
        ("app-user-timeouts", "advisory")
    ]


def test_budget_error_exits_2_with_its_message(scratch_dir):
    def edit(config):
        config["slotguard:pooler"]["pgbouncer"]["pool_size"] = 30

    write_stack(scratch_dir, "over", edit)
    result = runner.invoke(app, ["policy", "--stack", "over", "--project-dir", str(scratch_dir)])
    assert result.exit_code == 2
    assert "the budget does not hold" in result.output
    assert "pooler.pgbouncer.pool_size" in result.output


def test_bad_policy_config_exits_2(scratch_dir):
    config = scratch_dir / "policy.yaml"
    config.write_text("connection-budget:\n  adminMargin: lots\n")
    result = runner.invoke(
        app,
        ["policy", "--stack", "dev", "--json", "--config", str(config), "--project-dir", str(ROOT)],
    )
    assert result.exit_code == 2
    data = json.loads(result.output)
    assert data["ok"] is False
    assert "connection-budget" in data["errors"][0]
    assert "adminMargin" in data["errors"][0]
