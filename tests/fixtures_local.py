"""Fixtures for the local runtime and the storm: runtimes over the sample functions, clients."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slotguard.drills import StackHandle
from slotguard.local.control import down, up
from slotguard.local.postgres import LocalPostgres
from slotguard.local.runtime import FunctionSpec, LocalRuntime, RuntimeSettings
from slotguard.local.stack import StackPlan
from slotguard.local.state import STATE_DIR_ENV
from slotguard.storm.client import lambda_client
from tests.scratch import reachable_temp_dir

SAMPLE_CODE_DIR = Path(__file__).resolve().parent  # holds the `sample_functions` package

RuntimeFactory = Callable[..., LocalRuntime]


def sample_spec(name: str, module: str, **fields: Any) -> FunctionSpec:
    """A spec for `tests/sample_functions/<module>.py`'s handler."""
    return FunctionSpec(
        name=name, handler=f"sample_functions.{module}.handler", code_dir=SAMPLE_CODE_DIR, **fields
    )


@pytest.fixture
def runtime_factory() -> Iterator[RuntimeFactory]:
    """Start local runtimes serving the given specs; all are stopped after the test."""
    started: list[LocalRuntime] = []

    def make(specs: list[FunctionSpec], **settings: Any) -> LocalRuntime:
        runtime = LocalRuntime(specs, RuntimeSettings(**settings)).start()
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        runtime.stop()


@pytest.fixture
def client_for() -> Callable[..., Any]:
    """A boto3 Lambda client for a runtime: no retries, a pool sized for `pool` callers."""

    def make(runtime: LocalRuntime, pool: int = 10) -> Any:
        return lambda_client(endpoint_url=runtime.endpoint_url, pool_size=pool)

    return make


def app_role(server: LocalPostgres, name: str = "app") -> dict[str, str]:
    """A non-superuser login role on `server` and the DB_* environment a sample function needs."""
    password = secrets.token_urlsafe(16)
    with server.connect_admin() as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
        verb = "alter" if exists else "create"
        conn.execute(f"{verb} role {name} login password '{password}'")
    return {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(server.settings.port),
        "DB_NAME": "postgres",
        "DB_USER": name,
        "DB_PASSWORD": password,
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": str(server.tls.ca_cert),
        "DB_CONNECT_TIMEOUT_S": "5",
    }


def client_backends(server: LocalPostgres, application_name: str) -> int:
    """Client connections a function holds on `server` right now."""
    with server.connect_admin() as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity "
            "where backend_type = 'client backend' and application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def dev_stack_up(prefix: str) -> Iterator[StackHandle]:
    """The `dev` stack brought up in a scratch state directory, taken down and removed after."""
    base = reachable_temp_dir(prefix)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_DIR_ENV, str(base))
        plan = StackPlan.load("dev", base=base)
        record = up(plan).record
        try:
            yield StackHandle(plan, record)
        finally:
            down(plan)
    shutil.rmtree(base, ignore_errors=True)
