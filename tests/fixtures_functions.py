"""Fixtures for the functions: a Lambda-like context, a local Secrets Manager, a bootstrapped stack.

Secrets Manager is a moto server on 127.0.0.1 reached through `AWS_ENDPOINT_URL`, exactly how the
local target points the functions at it; PostgreSQL and PgBouncer are real.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from functions import bootstrap
from functions.credentials import DatabaseSecret
from pgbouncer import scram
from slotguard.local.pgbouncer import LocalPgBouncer
from slotguard.local.ports import free_port
from slotguard.local.postgres import LocalPostgres

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
REGION = "eu-west-1"


@dataclass
class FakeLambdaContext:
    """The Lambda context object's fields and a remaining time counting down from `timeout_s`."""

    function_name: str = "slotguard-test"
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:slotguard-test"
    log_group_name: str = "/aws/lambda/slotguard-test"
    log_stream_name: str = "local"
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_copies = 0


def load_function_instance(module: str = "api") -> ModuleType:
    """Load an independent copy of the `functions` package (one simulated function instance).

    The handlers import each other relatively, so the copy's module-scope state (the kept
    connection, the cold-start flag) belongs to that copy alone, as on AWS.
    """
    global _copies  # noqa: PLW0603 - a counter for unique module names
    _copies += 1
    alias = f"functions_instance_{_copies}"
    spec = importlib.util.spec_from_file_location(
        alias, FUNCTIONS_DIR / "__init__.py", submodule_search_locations=[str(FUNCTIONS_DIR)]
    )
    assert spec is not None
    assert spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{alias}.{module}")


@dataclass
class LocalAws:
    """A moto server standing in for Secrets Manager (and CloudWatch) on 127.0.0.1."""

    endpoint_url: str

    def secretsmanager(self) -> Any:
        return boto3.client(
            "secretsmanager",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def put_secret(self, value: dict[str, Any]) -> str:
        name = f"slotguard-test-{uuid.uuid4().hex[:12]}"
        created = self.secretsmanager().create_secret(Name=name, SecretString=json.dumps(value))
        return str(created["ARN"])

    def update_secret(self, arn: str, value: dict[str, Any]) -> None:
        self.secretsmanager().put_secret_value(SecretId=arn, SecretString=json.dumps(value))


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield LocalAws(f"http://{host}:{port}")
    server.stop()


@pytest.fixture
def aws_env(local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> LocalAws:
    """Point boto3 (as the functions create it) at the local moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return local_aws


def bootstrap_event(**app_user: Any) -> dict[str, Any]:
    """The event the deployment sends; `app_user` overrides the role settings."""
    return {
        "app_user": {
            "name": "app_user",
            "connection_limit": 20,
            "statement_timeout_ms": 1000,
            "idle_in_transaction_session_timeout_ms": 1500,
            "lock_timeout_ms": 500,
            "search_path": ["app"],
            **app_user,
        },
        "migration_role": {"name": "app_migrator"},
        "database": "app",
    }


@dataclass
class FunctionsStack:
    """A bootstrapped database (roles, grants, migrations) with PgBouncer in front of it."""

    postgres: LocalPostgres
    bouncer: LocalPgBouncer
    event: dict[str, Any]
    master: DatabaseSecret
    app_secret: DatabaseSecret
    migrator_secret: DatabaseSecret
    target: bootstrap.Target
    first_report: bootstrap.BootstrapReport

    @property
    def app_password(self) -> str:
        return self.app_secret.password

    def env(self, *, via: str = "pooler", secret_arn: str, **extra: str) -> dict[str, str]:
        """The function environment of the shared contract, wired to the pooler or the database."""
        port = self.bouncer.port if via == "pooler" else self.postgres.settings.port
        return {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(port),
            "DB_NAME": "app",
            "DB_USER": "app_user",
            "DB_AUTH": "secret",
            "DB_SECRET_ARN": secret_arn,
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": str(self.postgres.tls.ca_cert),
            "DB_CONNECT_TIMEOUT_S": "2",
            "DB_IDLE_DISCARD_S": "60",
            "DB_RETRY_BUDGET_S": "5",
            "DB_RETRIES": "on",
            "HEALTH_ALARM_PERCENT": "80",
            **extra,
        }

    def secret_value(self) -> dict[str, Any]:
        return self.app_secret.model_dump(exclude_none=True)


def make_stack(
    postgres_factory: Callable[..., LocalPostgres],
    pgbouncer_factory: Callable[..., LocalPgBouncer],
    *,
    max_connections: int = 40,
    pool_size: int = 4,
    **bouncer_settings: Any,
) -> FunctionsStack:
    server = postgres_factory(max_connections=max_connections)
    with server.connect_admin() as admin:
        admin.execute("CREATE DATABASE app")
    app_password = secrets.token_urlsafe(18)
    migrator_password = secrets.token_urlsafe(18)
    target = bootstrap.Target(
        host="127.0.0.1",
        port=server.settings.port,
        sslrootcert=str(server.tls.ca_cert),
        connect_timeout_s=5,
    )
    common = {"engine": "postgres", "host": "127.0.0.1", "port": server.settings.port}
    master = DatabaseSecret(username="postgres", password=server.master_password)
    app_secret = DatabaseSecret.model_validate(
        {
            "username": "app_user",
            "password": app_password,
            "dbname": "app",
            "scram_verifier": scram.make_verifier(app_password),
            **common,
        }
    )
    migrator = DatabaseSecret.model_validate(
        {"username": "app_migrator", "password": migrator_password, "dbname": "app", **common}
    )
    event = bootstrap_event()
    report = bootstrap.run(
        bootstrap.BootstrapEvent.model_validate(event), target, master, app_secret, migrator
    )
    bouncer = pgbouncer_factory(
        server,
        users={"app_user": app_password},
        dbname="app",
        pool_size=pool_size,
        create_roles=False,
        **bouncer_settings,
    )
    return FunctionsStack(server, bouncer, event, master, app_secret, migrator, target, report)


@pytest.fixture(scope="session")
def functions_stack(postgres_factory, pgbouncer_factory) -> FunctionsStack:
    """One bootstrapped database behind PgBouncer (pool of 4), shared by the functions' tests."""
    return make_stack(postgres_factory, pgbouncer_factory)


@pytest.fixture
def function_env(
    functions_stack: FunctionsStack, aws_env: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, str]]:
    """Set the contract's environment for a function wired to the pooler (or `via="database"`)."""

    def apply(*, via: str = "pooler", **extra: str) -> dict[str, str]:
        arn = aws_env.put_secret(functions_stack.secret_value())
        env = functions_stack.env(via=via, secret_arn=arn, **extra)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env

    return apply
