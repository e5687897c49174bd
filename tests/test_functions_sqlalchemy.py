"""SQLAlchemy on the kept connection, against a real PostgreSQL behind a real PgBouncer."""

from __future__ import annotations

import importlib
import socket
import time
import uuid
from types import ModuleType

import psycopg
import pytest
from sqlalchemy import BigInteger, Integer, String, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.fixtures_functions import FakeLambdaContext, FunctionsStack, load_function_instance
from tests.test_functions_db import client_ports

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    pass


class Item(Base):
    """The `items` table of migration 0001, as a team maps its own tables."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)


def instance(function_env, name: str, **env: str) -> tuple[ModuleType, FakeLambdaContext]:
    function_env(via="pooler", AWS_LAMBDA_FUNCTION_NAME=name, **env)
    return load_function_instance("sqlalchemy_db"), FakeLambdaContext(name)


def errors_of(sql: ModuleType) -> ModuleType:
    """The errors module of the same function instance (each instance is a separate copy)."""
    return importlib.import_module(f"{sql.__package__}.errors")


def names_in_database(stack: FunctionsStack, prefix: str) -> list[str]:
    with stack.postgres.connect_admin(dbname="app") as admin:
        rows = admin.execute(
            "select name from app.items where name like %s order by id", (prefix + "%",)
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_warm_sessions_share_one_pooler_login_and_commit(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-warm")
    prefix = f"sa-warm-{uuid.uuid4().hex[:8]}-"
    for i in range(20):
        with sql.session(ctx) as session:
            session.add(Item(name=f"{prefix}{i}"))
    with sql.session(ctx) as session:
        count = session.scalar(select(func.count()).where(Item.name.like(prefix + "%")))
    helper = sql.database()
    assert count == 20
    assert helper.logins == 1
    assert len(client_ports(functions_stack.bouncer, "fn-sa-warm")) == 1
    assert len(names_in_database(functions_stack, prefix)) == 20  # committed, seen from outside
    # The psycopg helper still hands out dict rows on the same connection afterwards.
    with sql.database().transaction(ctx) as conn:
        row = conn.execute("select 1 as one").fetchone()
    assert row == {"one": 1}
    helper.close()


def test_an_exception_rolls_the_block_back_and_keeps_the_connection(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-error")
    prefix = f"sa-error-{uuid.uuid4().hex[:8]}-"

    def give_up() -> None:
        with sql.session(ctx) as session:
            session.add(Item(name=f"{prefix}lost"))
            session.flush()  # the INSERT has run inside the transaction
            raise LookupError("the handler gives up")

    with pytest.raises(LookupError):
        give_up()
    with sql.connection(ctx) as conn:
        conn.execute(text("insert into items (name) values (:n)"), {"n": f"{prefix}kept"})
    assert names_in_database(functions_stack, prefix) == [f"{prefix}kept"]
    assert sql.database().logins == 1
    sql.database().close()


def test_an_error_on_data_reaches_the_caller_as_sqlalchemy_raised_it(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-integrity")
    key = uuid.uuid4().hex
    with sql.session(ctx) as session:
        session.add(Item(name="sa-first", idempotency_key=key))
    with pytest.raises(IntegrityError) as raised, sql.session(ctx) as session:
        session.add(Item(name="sa-second", idempotency_key=key))
    assert isinstance(raised.value.orig, psycopg.errors.UniqueViolation)
    with sql.session(ctx) as session:  # the same connection serves the next block
        names = session.scalars(select(Item.name).where(Item.idempotency_key == key)).all()
    assert names == ["sa-first"]
    assert sql.database().logins == 1
    sql.database().close()


def test_session_commit_and_rollback_are_savepoints_inside_the_block(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-savepoint")
    prefix = f"sa-sp-{uuid.uuid4().hex[:8]}-"
    with sql.session(ctx) as session:
        session.add(Item(name=f"{prefix}a"))
        session.commit()  # RELEASE SAVEPOINT: kept, but not committed until the block ends
        assert names_in_database(functions_stack, prefix) == []
        session.add(Item(name=f"{prefix}b"))
        session.rollback()  # ROLLBACK TO SAVEPOINT: b only
    assert names_in_database(functions_stack, prefix) == [f"{prefix}a"]
    sql.database().close()


def test_connection_commit_inside_the_block_is_refused(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-refuse")
    prefix = f"sa-refuse-{uuid.uuid4().hex[:8]}-"

    def commit_inside() -> None:
        with sql.connection(ctx) as conn:
            conn.execute(text("insert into items (name) values (:n)"), {"n": f"{prefix}x"})
            conn.commit()

    with pytest.raises(sql.TransactionControlError, match="commit"):
        commit_inside()
    assert names_in_database(functions_stack, prefix) == []
    with sql.connection(ctx) as conn:
        with conn.begin_nested() as part:
            conn.execute(text("insert into items (name) values (:n)"), {"n": f"{prefix}undone"})
            part.rollback()
        conn.execute(text("insert into items (name) values (:n)"), {"n": f"{prefix}done"})
    assert names_in_database(functions_stack, prefix) == [f"{prefix}done"]
    sql.database().close()


def test_the_role_statement_timeout_becomes_database_unavailable(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-timeout")
    errors = errors_of(sql)
    started = time.monotonic()
    with pytest.raises(errors.DatabaseUnavailableError) as raised, sql.connection(ctx) as conn:
        conn.execute(text("select pg_sleep(3)"))
    assert time.monotonic() - started < 2.5  # the role's 1 s statement_timeout, not 3 s
    assert raised.value.failure is errors.FailureClass.STATEMENT_TIMEOUT
    with sql.session(ctx) as session:  # the connection was rolled back and serves again
        assert session.scalar(text("select 1")) == 1
    sql.database().close()


def test_an_idle_connection_is_discarded_before_the_next_session(function_env, functions_stack):
    sql, ctx = instance(function_env, "fn-sa-idle", DB_IDLE_DISCARD_S="0.5")
    with sql.session(ctx) as session:
        first = session.scalar(text("select 1"))
    time.sleep(0.7)
    with sql.session(ctx) as session:
        second = session.scalar(text("select 1"))
    assert (first, second) == (1, 1)
    assert sql.database().logins == 2
    sql.database().close()


def test_a_refused_connect_is_retried_within_the_budget(function_env, functions_stack):
    with socket.socket() as probe:  # a port nothing listens on: every connect is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sql, ctx = instance(function_env, "fn-sa-retry", DB_PORT=str(port), DB_RETRY_BUDGET_S="1")
    started = time.monotonic()
    with pytest.raises(errors_of(sql).DatabaseUnavailableError) as raised, sql.session(ctx):
        pytest.fail("the block never runs without a connection")
    assert raised.value.attempts > 1
    assert sql.database().retries == raised.value.attempts - 1
    assert time.monotonic() - started < 3.0


def test_the_engine_is_not_usable_outside_a_block(function_env, functions_stack):
    sql, _ = instance(function_env, "fn-sa-outside")
    with pytest.raises(RuntimeError, match="only inside"):
        sql.engine().connect()
