"""The read-only path against real PostgreSQL and PgBouncer: the read pool's second database
entry, the writer guard, and the helper's and SQLAlchemy's `read_only` transactions.

The local "reader" is the same server (the pooled connection is what is rehearsed: its
`connect_query`, its pool, the refusal of writes); the streaming replica is the failover drill's.
"""

from __future__ import annotations

import importlib
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from functions.config import DbSettings, load_settings
from functions.credentials import SecretCredentials
from functions.db import Database
from infra.budget import compute_budget
from infra.budget_cluster import pgbouncer_fields
from infra.settings import load_stack
from pgbouncer.config import (
    READ_ONLY_CONNECT_QUERY,
    WRITER_GUARD_CONNECT_QUERY,
    ReadTarget,
    render_ini,
)
from pgbouncer.environment import _read_target
from slotguard.local.pgbouncer import LocalPgBouncer
from tests.fixtures_functions import (
    FakeLambdaContext,
    FunctionsStack,
    LocalAws,
    load_function_instance,
)

pytestmark = pytest.mark.integration

ALIAS = "app_ro"


@pytest.fixture(scope="module")
def read_bouncer(functions_stack: FunctionsStack, pgbouncer_factory: Any) -> LocalPgBouncer:
    """A PgBouncer with the Aurora rendering: a read pool, the writer guard, failover settings."""
    stack = functions_stack
    bouncer: LocalPgBouncer = pgbouncer_factory(
        stack.postgres,
        users={"app_user": stack.app_password},
        dbname="app",
        pool_size=3,
        create_roles=False,
        read_database=ReadTarget(
            host="127.0.0.1",
            port=stack.postgres.settings.port,
            alias=ALIAS,
            pool_size=2,
            max_db_connections=2,
        ),
        writer_guard=True,
        dns_max_ttl_s=5,
        server_check_delay_s=5,
    )
    return bouncer


def _connect(
    stack: FunctionsStack, bouncer: LocalPgBouncer, dbname: str
) -> psycopg.Connection[Any]:
    return psycopg.connect(
        bouncer.conninfo("app_user", stack.app_password, dbname=dbname), autocommit=True
    )


def test_rendered_read_pool_is_a_second_database_entry(read_bouncer: LocalPgBouncer) -> None:
    (ini,) = render_ini(read_bouncer.settings)
    databases = ini.split("[databases]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert databases[0].startswith("app = ")
    assert WRITER_GUARD_CONNECT_QUERY in databases[0]
    assert databases[1].startswith(f"{ALIAS} = ")
    assert "pool_size=2 max_db_connections=2" in databases[1]
    assert f"connect_query='{READ_ONLY_CONNECT_QUERY}'" in databases[1]
    assert "dns_max_ttl = 5\n" in ini
    assert "server_check_delay = 5\n" in ini
    # PgBouncer itself lists both entries with their own limits (SHOW DATABASES).
    rows = {str(r["name"]): r for r in read_bouncer.show("DATABASES")}
    assert int(str(rows[ALIAS]["pool_size"])) == 2
    assert int(str(rows[ALIAS]["max_connections"])) == 2
    assert int(str(rows["app"]["pool_size"])) == 3


def test_read_pool_is_reachable_and_refuses_writes(
    functions_stack: FunctionsStack, read_bouncer: LocalPgBouncer
) -> None:
    with _connect(functions_stack, read_bouncer, ALIAS) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        count = conn.execute("SELECT count(*) FROM app.items").fetchone()
        assert count is not None
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
            conn.execute("INSERT INTO app.items (name) VALUES ('through the read pool')")
    # The write pool, behind the writer guard, writes as before.
    with _connect(functions_stack, read_bouncer, "app") as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        with conn.transaction():
            conn.execute("INSERT INTO app.items (name) VALUES ('through the write pool')")
            conn.execute("DELETE FROM app.items WHERE name = 'through the write pool'")


def test_writer_guard_fails_on_a_standby(functions_stack: FunctionsStack) -> None:
    # On a hot standby pg_is_in_recovery() is true (PostgreSQL docs, "Recovery Control
    # Functions"); the guard then divides by zero and PgBouncer drops the server connection.
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        assert admin.execute(WRITER_GUARD_CONNECT_QUERY).fetchone() == (1,)
        standby = WRITER_GUARD_CONNECT_QUERY.replace("pg_is_in_recovery()", "true")
        with pytest.raises(psycopg.errors.DivisionByZero):
            admin.execute(standby)


def _reader_db(
    stack: FunctionsStack, bouncer: LocalPgBouncer, aws_env: LocalAws, **overrides: Any
) -> Database:
    arn = aws_env.put_secret(stack.secret_value())
    settings = DbSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": bouncer.port,
            "dbname": "app",
            "user": "app_user",
            "secret_arn": arn,
            "sslrootcert": str(stack.postgres.tls.ca_cert),
            "connect_timeout_s": 2,
            "retry_budget_s": 5,
            **overrides,
        }
    ).for_reads()
    return Database(settings, SecretCredentials(arn, "app_user"), "reader-test", read_only=True)


def test_helper_read_only_path_reads_and_never_writes(
    functions_stack: FunctionsStack, read_bouncer: LocalPgBouncer, aws_env: LocalAws
) -> None:
    db = _reader_db(functions_stack, read_bouncer, aws_env, read_dbname=ALIAS)
    assert db.settings.dbname == ALIAS
    context = FakeLambdaContext("reader-test")
    with db.transaction(context) as conn:
        row = conn.execute("SELECT current_setting('transaction_read_only') AS ro").fetchone()
    assert row == {"ro": "on"}
    with (
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        db.transaction(context) as conn,
    ):
        conn.execute("INSERT INTO app.items (name) VALUES ('helper write on the read path')")
    db.close()


def test_without_readers_the_read_path_is_still_read_only(
    functions_stack: FunctionsStack, read_bouncer: LocalPgBouncer, aws_env: LocalAws
) -> None:
    # No DB_READ_NAME: the write pool, but every transaction BEGIN READ ONLY.
    db = _reader_db(functions_stack, read_bouncer, aws_env)
    assert db.settings.dbname == "app"
    with (
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        db.transaction(FakeLambdaContext("reader-test")) as conn,
    ):
        conn.execute("INSERT INTO app.items (name) VALUES ('helper write, no readers')")
    db.close()


def test_environment_names_the_read_path() -> None:
    settings = load_settings(
        {
            "DB_HOST": "writer.example",
            "DB_NAME": "app",
            "DB_SECRET_ARN": "arn:x",
            "DB_READ_HOST": "reader.example",
            "DB_READ_NAME": ALIAS,
        }
    )
    reads = settings.for_reads()
    assert (reads.host, reads.dbname) == ("reader.example", ALIAS)
    assert (settings.host, settings.dbname) == ("writer.example", "app")


def test_task_environment_round_trip() -> None:
    # What the ECS task gets from the budget is what pgbouncer/environment.py reads back.
    budget = compute_budget(load_stack("aurora"))
    fields = pgbouncer_fields(budget.read_pool, budget.failover)
    env = {f"PGBOUNCER_{k}": v for k, v in fields.items()}
    env["PGBOUNCER_READ_DB_HOST"] = "cluster-ro.example"
    target = _read_target(env, 5432)
    assert target is not None
    assert budget.read_pool is not None
    assert (target.alias, target.pool_size, target.max_db_connections) == (
        ALIAS,
        budget.read_pool.pool_size,
        budget.read_pool.max_db_connections,
    )
    assert fields["WRITER_GUARD"] == "on"
    assert fields["DNS_MAX_TTL_S"] == "5"


def test_sqlalchemy_read_only_connection(
    function_env: Any, functions_stack: FunctionsStack, read_bouncer: LocalPgBouncer
) -> None:
    function_env(
        via="pooler",
        AWS_LAMBDA_FUNCTION_NAME="sqla-reader",
        DB_PORT=str(read_bouncer.port),
        DB_READ_NAME=ALIAS,
    )
    sql = load_function_instance("sqlalchemy_db")
    context = FakeLambdaContext("sqla-reader")
    with sql.connection(context, read_only=True) as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == "app"
        assert conn.execute(text("SHOW transaction_read_only")).scalar() == "on"
    with (
        pytest.raises(DBAPIError, match="read-only transaction"),
        sql.connection(context, read_only=True) as conn,
    ):
        conn.execute(text("INSERT INTO app.items (name) VALUES ('sqlalchemy on the read path')"))
    db_module = importlib.import_module(f"{sql.__package__}.db")
    db_module.reset()
