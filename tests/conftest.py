"""Shared fixtures: real PostgreSQL servers (never mocks), started as an unprivileged user."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.settings import load_stack
from slotguard.local.ports import free_port
from slotguard.local.postgres import LocalPostgres, PostgresServerSettings
from slotguard.local.state import KIT_ROOT
from slotguard.local.system import ensure_programs, service_user
from tests import examples
from tests.scratch import reachable_temp_dir

PostgresFactory = Callable[..., LocalPostgres]
# The servers the tests start run the dev stack's PostgreSQL major, as `slotguard up` does.
DEV_MAJOR = load_stack("dev", KIT_ROOT).database.engine_major

# Each area keeps its fixtures in its own module.
pytest_plugins = [
    "tests.session_guard",
    "tests.scheduling",
    "tests.fixtures_pgbouncer",
    "tests.fixtures_functions",
    "tests.fixtures_local",
    "tests.aws_stubs",
]


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[PostgresFactory]:
    """Start fresh PostgreSQL clusters with chosen settings; all are stopped at session end."""
    ensure_programs()
    started: list[LocalPostgres] = []
    roots: list[Path] = []

    def make(max_connections: int = 50, **settings: object) -> LocalPostgres:
        root = reachable_temp_dir("slotguard-pg-")
        roots.append(root)
        server = LocalPostgres(
            root,
            PostgresServerSettings(
                port=free_port(),
                max_connections=max_connections,
                **{"major": DEV_MAJOR, **settings},  # type: ignore[arg-type]
            ),
            service_user(),
        )
        server.init()
        server.start()
        server.wait_ready()
        started.append(server)
        return server

    yield make
    # Stopped side by side: one at a time, a session's dozens of servers take half a minute.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda server: server.stop("immediate"), started))
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(postgres_factory: PostgresFactory) -> LocalPostgres:
    """One shared server (max_connections 50) for tests that do not care about its size."""
    return postgres_factory(max_connections=50)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temporary directory the unprivileged server account can read."""
    path = reachable_temp_dir("slotguard-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Leave out a test module of an example handler the fork removed (tests/examples.py)."""
    module = examples.NEEDS.get(collection_path.name)
    return True if module is not None and examples.missing(module) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        key = f"{Path(str(item.fspath)).name}::{item.name}"
        module = examples.NEEDS_TESTS.get(key)
        if module is not None and examples.missing(module):
            item.add_marker(
                pytest.mark.skip(reason=f"the example functions/{module}.py was removed")
            )


def pytest_report_header() -> str | None:
    gone = examples.removed()
    return f"example handlers removed: not collected: {', '.join(gone)}" if gone else None
