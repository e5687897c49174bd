"""`slotguard budget`: table and exit 0 when the budget holds, exit 2 naming the setting if not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from slotguard.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def copy_dev(tmp_path: Path, edit) -> Path:
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    edit(document["config"])
    (tmp_path / "Pulumi.broken.yaml").write_text(yaml.safe_dump(document))
    shutil.copy(ROOT / "Pulumi.dev.yaml", tmp_path / "Pulumi.dev.yaml")
    return tmp_path


def test_dev_budget_table_exit_0():
    result = runner.invoke(app, ["budget", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "pgbouncer.server_connections" in result.output
    assert "budget holds" in result.output


def test_dev_budget_json_has_every_number():
    result = runner.invoke(app, ["budget", "--stack", "dev", "--json", "--project-dir", str(ROOT)])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["ok"] is True
    assert data["max_connections"] == 25
    assert (
        data["pgbouncer"]["max_db_connections"] * data["pgbouncer"]["processes"]
        == (data["pooler_server_connections"])
    )
    assert all("value" in f and "source" in f for f in data["figures"])


def test_pool_larger_than_the_database_exits_2_naming_the_setting(tmp_path):
    def grow(config):
        config["slotguard:pooler"]["pgbouncer"]["pool_size"] = 40

    root = copy_dev(tmp_path, grow)
    result = runner.invoke(app, ["budget", "--stack", "broken", "--project-dir", str(root)])
    assert result.exit_code == 2
    assert "pooler.pgbouncer.pool_size" in result.output
    assert "= 123 exceed the 15" in " ".join(result.output.split())


def test_misspelt_key_exits_2_suggesting_the_right_one(tmp_path):
    def misspell(config):
        config["slotguard:database"]["max_conections"] = config["slotguard:database"].pop(
            "max_connections"
        )

    root = copy_dev(tmp_path, misspell)
    result = runner.invoke(app, ["budget", "--stack", "broken", "--project-dir", str(root)])
    assert result.exit_code == 2
    assert "did you mean `database.max_connections`?" in result.output


def test_json_errors_are_json(tmp_path):
    def grow(config):
        config["slotguard:pooler"]["pgbouncer"]["pool_size"] = 40

    root = copy_dev(tmp_path, grow)
    result = runner.invoke(
        app, ["budget", "--stack", "broken", "--json", "--project-dir", str(root)]
    )
    assert result.exit_code == 2
    data = json.loads(result.output)
    assert data["ok"] is False
    assert any(e.startswith("pooler.pgbouncer.pool_size:") for e in data["errors"])
