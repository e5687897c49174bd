"""A scratch fork: the kit's tests and the offline check hold for a team's own stack and code.

The repository is copied into a temporary directory and changed as a team does when it forks the
kit (CONTRIBUTING.md, "Which files are whose"): the example handlers are removed, its own handler,
sample event and migration are added, its stacks name its own functions, and a stack of its own
is added. In that copy, `slotguard check` passes on the team's stack and a representative set of
the kit's tests passes (the full suite was run by hand once; see CHANGELOG.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.scratch import reachable_temp_dir

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=25)]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = (
    "functions/api.py",
    "functions/api.event.json",
    "functions/openapi.py",
    "functions/openapi.json",
    "functions/stock.py",
)
SKIPPED_DIRS = {".git", ".venv", "build", ".state", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
# Kit tests that must hold in any fork (they use fixtures, not the example handlers).
KIT_TESTS = (
    "tests/test_handlers.py",
    "tests/test_settings_errors.py",
    "tests/test_drift.py",
    "tests/test_cli_plain_text.py",
    "tests/test_docs_figures.py",
    "tests/test_functions_bootstrap.py",
)

ORDERS_HANDLER = '''"""The team's own function: count orders (a fork's handler, not the kit's example)."""

from __future__ import annotations

import json
from typing import Any

from .db import transaction
from .errors import DatabaseUnavailableError
from .observability import flush, with_lambda_context


@with_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        with transaction(context) as conn:
            row = conn.execute("SELECT count(*) AS n FROM orders").fetchone()
        return {"statusCode": 200, "body": json.dumps({"orders": row["n"] if row else 0})}
    except DatabaseUnavailableError as exc:
        return {"statusCode": 503, "body": json.dumps({"reason": exc.reason})}
    finally:
        flush()
'''


def _files(root: Path) -> list[Path]:
    """The repository's files (tracked and new), without caches, builds or virtualenvs."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        return [
            root / name.decode() for name in listed if name and (root / name.decode()).is_file()
        ]
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in root.rglob("*")
            if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(root).parts)
        ]


def make_fork(target: Path) -> Path:
    for source in _files(ROOT):
        destination = target / source.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    for example in EXAMPLES:
        (target / example).unlink(missing_ok=True)
    functions = target / "functions"
    (functions / "orders.py").write_text(ORDERS_HANDLER)
    (functions / "orders.event.json").write_text(json.dumps({"source": "storm-{index}"}))
    migrations = functions / "migrations"
    (migrations / "0003.orders.sql").write_text(
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n"
    )
    (migrations / "0003.orders.rollback.sql").write_text("DROP TABLE orders;\n")
    # The team's stacks name its own handler where the example's was.
    for stack in ("dev", "prod"):
        path = target / f"Pulumi.{stack}.yaml"
        path.write_text(
            path.read_text().replace("functions.api.handler", "functions.orders.handler")
        )
    document = yaml.safe_load((target / "Pulumi.dev.yaml").read_text())
    document["config"]["slotguard:functions"] = {
        "orders": {"handler": "functions.orders.handler", "reserved_concurrency": 200},
        "status": {"handler": "functions.health.handler", "reserved_concurrency": 5},
    }
    (target / "Pulumi.orders.yaml").write_text(yaml.safe_dump(document))
    return target


@pytest.fixture(scope="module")
def fork() -> Iterator[Path]:
    path = reachable_temp_dir("slotguard-scratch-fork-")
    yield make_fork(path)
    shutil.rmtree(path, ignore_errors=True)


def in_fork(fork: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SLOTGUARD_"))}
    env.update(PYTHONPATH=str(fork), COLUMNS="200", SLOTGUARD_STATE_DIR=str(fork / ".state"))
    return subprocess.run(
        [sys.executable, *args],
        cwd=fork,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_fork_runs_its_own_copy_of_the_kit(fork: Path) -> None:
    result = in_fork(
        fork, "-c", "import infra.packaging, slotguard; print(infra.packaging.__file__)"
    )
    assert result.stdout.strip() == str(fork / "infra" / "packaging.py"), result.stderr


def test_the_offline_check_passes_on_the_forks_own_stack(fork: Path) -> None:
    result = in_fork(fork, "-m", "slotguard.cli", "check", "--stack", "orders")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok handlers: functions.orders.handler, functions.health.handler" in result.stdout
    assert "ok storm event: orders with functions/orders.event.json" in result.stdout
    assert "0 mandatory" in result.stdout


def test_the_offline_check_refuses_a_handler_the_fork_removed(fork: Path) -> None:
    document = yaml.safe_load((fork / "Pulumi.orders.yaml").read_text())
    document["config"]["slotguard:functions"]["orders"]["handler"] = "functions.api.handler"
    (fork / "Pulumi.stale.yaml").write_text(yaml.safe_dump(document))
    result = in_fork(fork, "-m", "slotguard.cli", "check", "--stack", "stale")
    assert result.returncode == 2
    assert "no module functions.api in the packaged functions/ directory" in " ".join(
        result.stdout.split()
    )


def test_the_kit_tests_pass_in_the_fork(fork: Path) -> None:
    result = in_fork(
        fork, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider", *KIT_TESTS
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
