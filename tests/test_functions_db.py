"""The connection helper against a real PostgreSQL and a real PgBouncer in transaction mode."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from functions.config import DbSettings
from functions.credentials import SecretCredentials
from functions.db import Database
from functions.errors import DatabaseUnavailableError, FailureClass, classify
from slotguard.local.pgbouncer import LocalPgBouncer
from slotguard.local.ports import free_port
from tests.fixtures_functions import (
    FakeLambdaContext,
    FunctionsStack,
    LocalAws,
    load_function_instance,
    make_stack,
)

pytestmark = pytest.mark.integration


def settings_for(stack: FunctionsStack, via: str = "pooler", **overrides: Any) -> DbSettings:
    port = stack.bouncer.port if via == "pooler" else stack.postgres.settings.port
    values = {
        "host": "127.0.0.1",
        "port": port,
        "dbname": "app",
        "user": "app_user",
        "secret_arn": "unused",
        "sslrootcert": str(stack.postgres.tls.ca_cert),
        "connect_timeout_s": 2,
        "idle_discard_s": 60,
        "retry_budget_s": 5,
        **overrides,
    }
    return DbSettings.model_validate(values)


def make_db(
    stack: FunctionsStack,
    aws_env: LocalAws,
    via: str = "pooler",
    name: str = "fn-test",
    secret: dict[str, Any] | None = None,
    **overrides: Any,
) -> Database:
    arn = aws_env.put_secret(secret or stack.secret_value())
    settings = settings_for(stack, via, secret_arn=arn, **overrides)
    return Database(settings, SecretCredentials(arn, settings.user), name)


def one_query(db: Database, context: FakeLambdaContext | None = None) -> int:
    with db.transaction(context or FakeLambdaContext(db.application_name)) as conn:
        row = conn.execute("select pg_backend_pid() as pid").fetchone()
    assert row is not None
    return int(row["pid"])


def client_ports(bouncer: LocalPgBouncer, application_name: str) -> list[int]:
    return sorted(
        int(str(row["port"]))
        for row in bouncer.show("CLIENTS")
        if row.get("application_name") == application_name
    )


# -- one warm instance keeps one connection ---------------------------------------------------


def test_100_warm_invocations_use_one_login_through_the_pooler(function_env, functions_stack):
    function_env(via="pooler", AWS_LAMBDA_FUNCTION_NAME="fn-warm-pooler")
    db_module = load_function_instance("db")
    for _ in range(100):
        with db_module.transaction(FakeLambdaContext("fn-warm-pooler")) as conn:
            conn.execute("select %s::int", (1,))
    helper = db_module.database()
    assert helper.logins == 1
    assert len(client_ports(functions_stack.bouncer, "fn-warm-pooler")) == 1
    helper.close()


def test_100_warm_invocations_use_one_backend_direct(functions_stack, aws_env):
    db = make_db(functions_stack, aws_env, via="database", name="fn-warm-direct")
    pids = {one_query(db) for _ in range(100)}
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        (backends,) = admin.execute(
            "select count(*) from pg_stat_activity where application_name = 'fn-warm-direct'"
        ).fetchone()
    assert (db.logins, len(pids), backends) == (1, 1, 1)
    db.close()


def test_after_the_idle_threshold_the_next_invocation_reconnects(functions_stack, aws_env):
    db = make_db(functions_stack, aws_env, via="database", name="fn-idle", idle_discard_s=0.5)
    first = one_query(db)
    assert one_query(db) == first  # within the threshold: the same connection
    time.sleep(0.7)
    second = one_query(db)
    assert second != first
    assert db.logins == 2
    db.close()


def test_a_connection_closed_by_the_server_is_replaced_transparently(functions_stack, aws_env):
    db = make_db(functions_stack, aws_env, via="database", name="fn-killed")
    first = one_query(db)
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        admin.execute("select pg_terminate_backend(%s)", (first,))
        # Until the backend has gone (its goodbye sent), not a fixed while.
        deadline = time.monotonic() + 10
        while admin.execute("select 1 from pg_stat_activity where pid = %s", (first,)).fetchone():
            assert time.monotonic() < deadline, "the terminated backend did not exit"
            time.sleep(0.02)
    assert one_query(db) != first  # no error reached the caller
    assert db.logins == 2
    db.close()


def test_a_pooler_reaped_client_is_replaced_transparently(
    postgres_factory, pgbouncer_factory, functions_stack, aws_env
):
    bouncer = pgbouncer_factory(
        functions_stack.postgres,
        users={"app_user": functions_stack.app_password},
        dbname="app",
        pool_size=2,
        create_roles=False,
        client_idle_timeout_s=1,
    )
    db = make_db(functions_stack, aws_env, name="fn-reaped", port=bouncer.port)
    one_query(db)
    time.sleep(1.6)  # PgBouncer closes the idle client; the helper must notice before using it
    one_query(db)
    assert db.logins == 2
    db.close()


# -- retries, budgets and clear failures -----------------------------------------------------


@pytest.fixture(scope="module")
def small_stack(postgres_factory, pgbouncer_factory):
    """max_connections 12 (3 reserved): 9 slots, 4 of them held by the pooler's server pool."""
    return make_stack(postgres_factory, pgbouncer_factory, max_connections=12, pool_size=4)


def test_full_database_direct_fails_within_budget_and_the_pooler_serves_the_burst(
    small_stack, aws_env
):
    stack = small_stack
    # Warm the pooler: four concurrent transactions make it open its four server connections.
    warm = [make_db(stack, aws_env, name=f"warm-{i}") for i in range(4)]
    barrier = threading.Barrier(4)

    def hold(db: Database) -> None:
        with db.transaction(FakeLambdaContext()) as conn:
            barrier.wait(timeout=10)
            conn.execute("select pg_sleep(0.2)")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hold, warm))
    for db in warm:
        db.close()
    # Fill every remaining non-reserved slot with held connections: the database is full.
    holders = []
    while True:
        try:
            holders.append(
                psycopg.connect(stack.postgres.conninfo("app_user", stack.app_password, "app"))
            )
        except psycopg.OperationalError as exc:
            assert classify(exc) is FailureClass.TOO_MANY_CONNECTIONS
            break
    try:
        burst = 10
        direct = [
            make_db(stack, aws_env, via="database", name=f"direct-{i}", retry_budget_s=1.5)
            for i in range(burst)
        ]
        pooled = [
            make_db(stack, aws_env, name=f"pooled-{i}", retry_budget_s=1.5) for i in range(burst)
        ]

        def invoke(db: Database) -> tuple[str, DatabaseUnavailableError | None, float]:
            started = time.monotonic()
            try:
                with db.transaction(FakeLambdaContext(timeout_s=10)) as conn:
                    conn.execute("select pg_sleep(0.05)")
            except DatabaseUnavailableError as error:
                return ("failed", error, time.monotonic() - started)
            return ("ok", None, time.monotonic() - started)

        with ThreadPoolExecutor(burst) as pool:
            direct_results = list(pool.map(invoke, direct))
        with ThreadPoolExecutor(burst) as pool:
            pooled_results = list(pool.map(invoke, pooled))
    finally:
        for conn in holders:
            conn.close()
    failures = [r for r in direct_results if r[0] == "failed"]
    assert len(failures) == burst
    for _, error, elapsed in failures:
        assert error is not None
        assert error.failure is FailureClass.TOO_MANY_CONNECTIONS
        assert error.attempts > 1  # it retried ...
        assert elapsed < 1.5 + 2.5  # ... within its budget (plus at most one connect attempt)
        assert "TooManyConnections" in error.reason
    assert [r[0] for r in pooled_results] == ["ok"] * burst
    for db in direct + pooled:
        db.close()


def test_the_invocation_remaining_time_bounds_the_retries(aws_env, functions_stack):
    arn = aws_env.put_secret(functions_stack.secret_value())
    settings = DbSettings(
        host="127.0.0.1",
        port=free_port(),
        dbname="app",
        user="app_user",
        secret_arn=arn,
        sslrootcert=str(functions_stack.postgres.tls.ca_cert),
        retry_budget_s=30,
    )
    db = Database(settings, SecretCredentials(arn), "fn-refused")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as caught:
        db.begin(FakeLambdaContext(timeout_s=2.5))  # 1.5 s usable after the answer reserve
    elapsed = time.monotonic() - started
    assert caught.value.failure is FailureClass.CONNECTION
    assert caught.value.attempts >= 2
    assert elapsed < 2.5


def test_retries_off_fails_at_the_first_refusal(aws_env, functions_stack):
    arn = aws_env.put_secret(functions_stack.secret_value())
    settings = DbSettings(
        host="127.0.0.1",
        port=free_port(),
        dbname="app",
        secret_arn=arn,
        retries="off",
        sslrootcert=str(functions_stack.postgres.tls.ca_cert),
    )
    db = Database(settings, SecretCredentials(arn), "fn-naive")
    with pytest.raises(DatabaseUnavailableError) as caught:
        db.begin(FakeLambdaContext())
    assert caught.value.attempts == 1


def test_wrong_password_is_not_retried_beyond_one_refresh(functions_stack, aws_env):
    secret = {**functions_stack.secret_value(), "password": "not-the-password"}
    db = make_db(functions_stack, aws_env, via="database", secret=secret)
    with pytest.raises(DatabaseUnavailableError) as caught:
        db.begin(FakeLambdaContext())
    assert caught.value.failure is FailureClass.AUTHENTICATION
    assert caught.value.attempts == 1
    assert isinstance(db.credentials, SecretCredentials)
    assert db.credentials.fetches == 2  # cached secret, then one refresh


def test_a_rotated_password_is_picked_up(functions_stack, aws_env):
    postgres = functions_stack.postgres
    with postgres.connect_admin(dbname="app") as admin:
        admin.execute("drop role if exists rotating_user")
        admin.execute("create role rotating_user login password 'first-password'")
    secret = {"username": "rotating_user", "password": "first-password"}
    arn = aws_env.put_secret(secret)
    settings = settings_for(functions_stack, "database", user="rotating_user", secret_arn=arn)
    db = Database(settings, SecretCredentials(arn), "fn-rotation")
    one_query(db)
    db.close()
    # Rotation: the database and the secret change; this instance still caches the old one.
    with postgres.connect_admin(dbname="app") as admin:
        admin.execute("alter role rotating_user password 'second-password'")
    aws_env.update_secret(arn, {**secret, "password": "second-password"})
    one_query(db)
    assert isinstance(db.credentials, SecretCredentials)
    assert db.credentials.fetches == 2
    db.close()


def test_pooler_max_client_conn_refusal_is_retried(functions_stack, pgbouncer_factory, aws_env):
    bouncer = pgbouncer_factory(
        functions_stack.postgres,
        users={"app_user": functions_stack.app_password},
        dbname="app",
        pool_size=2,
        max_client_conn=2,
        create_roles=False,
    )
    conninfo = bouncer.conninfo("app_user", functions_stack.app_password, "app")
    holders = [psycopg.connect(conninfo) for _ in range(2)]
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(conninfo)
    assert "max_client_conn" in str(refused.value)
    assert classify(refused.value) is FailureClass.POOLER_REFUSAL
    db = make_db(functions_stack, aws_env, name="fn-max-client", port=bouncer.port)
    threading.Timer(0.8, holders[0].close).start()  # a slot frees up while the helper retries
    try:
        one_query(db)
    finally:
        holders[1].close()
    assert db.retries >= 1
    db.close()


def test_pooler_query_wait_timeout_is_retried(functions_stack, pgbouncer_factory, aws_env):
    # One server connection for the whole database, held by a role without app_user's timeouts.
    bouncer = pgbouncer_factory(
        functions_stack.postgres,
        users={"app_user": functions_stack.app_password, "blocker": "blocker-password"},
        dbname="app",
        pool_size=1,
        max_db_connections=1,
        query_wait_timeout_s=1,
    )
    blocker = psycopg.connect(bouncer.conninfo("blocker", "blocker-password", "app"))
    blocker.execute("select 1")  # holds the only server connection in an open transaction
    conninfo = bouncer.conninfo("app_user", functions_stack.app_password, "app")
    # PgBouncer refuses at login (the pool has no server to take parameters from) or at the
    # first query, depending on its pool state; both are the same refusal.
    with (
        pytest.raises(psycopg.OperationalError) as timed_out,
        psycopg.connect(conninfo, autocommit=True) as waiter,
    ):
        waiter.execute("select 1")
    assert "query_wait_timeout" in str(timed_out.value)
    assert classify(timed_out.value) is FailureClass.POOLER_REFUSAL
    db = make_db(functions_stack, aws_env, name="fn-wait", port=bouncer.port)
    release = threading.Timer(2.5, blocker.rollback)  # after the helper's first BEGIN timed out
    release.start()
    try:
        one_query(db, FakeLambdaContext(timeout_s=10))
    finally:
        release.join()
        blocker.close()
    assert db.retries >= 1
    db.close()


# -- role settings hold through the pooler ------------------------------------------------------


def test_statement_timeout_holds_through_pgbouncer_and_the_server_serves_the_next_client(
    functions_stack, pgbouncer_factory, aws_env
):
    bouncer = pgbouncer_factory(
        functions_stack.postgres,
        users={"app_user": functions_stack.app_password},
        dbname="app",
        pool_size=1,
        create_roles=False,
    )
    slow = make_db(functions_stack, aws_env, name="fn-slow", port=bouncer.port)
    other = make_db(functions_stack, aws_env, name="fn-next", port=bouncer.port)
    first_pid = one_query(slow)
    started = time.monotonic()
    with (
        pytest.raises(DatabaseUnavailableError) as caught,
        slow.transaction(FakeLambdaContext()) as conn,
    ):
        conn.execute("select pg_sleep(3)")
    assert time.monotonic() - started < 2.0  # the role's 1 s statement_timeout, not 3 s
    assert caught.value.failure is FailureClass.STATEMENT_TIMEOUT
    assert isinstance(caught.value.__cause__, psycopg.errors.QueryCanceled)
    assert one_query(other) == first_pid  # the one pooled server connection serves the next client
    assert one_query(slow) == first_pid  # and the cancelled client goes on
    for db in (slow, other):
        db.close()


def test_idle_in_transaction_session_is_ended_by_the_role_timeout(functions_stack, aws_env):
    db = make_db(functions_stack, aws_env, via="database", name="fn-idle-tx")
    pids: list[int] = []

    def sit_idle_in_a_transaction() -> None:
        with db.transaction(FakeLambdaContext()) as conn:
            row = conn.execute("select pg_backend_pid() as pid").fetchone()
            pids.append(int(row["pid"]) if row else 0)
            time.sleep(2.0)  # the role's idle_in_transaction_session_timeout is 1.5 s
            conn.execute("select 1")

    with pytest.raises(DatabaseUnavailableError) as caught:
        sit_idle_in_a_transaction()
    (pid,) = pids
    assert caught.value.failure in {FailureClass.SESSION_TERMINATED, FailureClass.CONNECTION}
    with functions_stack.postgres.connect_admin(dbname="app") as admin:
        gone = admin.execute(
            "select count(*) from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
    assert gone == (0,)
    assert one_query(db) != pid  # the next invocation reconnects
    db.close()


def test_prepared_statements_would_collide_on_a_shared_server_connection(
    functions_stack, pgbouncer_factory, aws_env
):
    # Why the helper turns them off: two clients served by one server connection in turn.
    bouncer = pgbouncer_factory(
        functions_stack.postgres,
        users={"app_user": functions_stack.app_password},
        dbname="app",
        pool_size=1,
        create_roles=False,
    )
    conninfo = bouncer.conninfo("app_user", functions_stack.app_password, "app")
    with (
        psycopg.connect(conninfo, autocommit=True, prepare_threshold=0) as first,
        psycopg.connect(conninfo, autocommit=True, prepare_threshold=0) as second,
    ):
        first.execute("select %s::int", (1,))
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            second.execute("select %s::text", ("x",))
    helpers = [
        make_db(functions_stack, aws_env, name=f"fn-shared-{i}", port=bouncer.port)
        for i in range(2)
    ]
    for i in range(10):
        with helpers[i % 2].transaction(FakeLambdaContext()) as conn:
            conn.execute("select %s::int", (i,))
    for db in helpers:
        db.close()


def test_repeated_parameterised_queries_work_through_transaction_pooling(functions_stack, aws_env):
    instances = [make_db(functions_stack, aws_env, name=f"fn-params-{i}") for i in range(6)]

    def work(db: Database) -> int:
        for i in range(40):
            with db.transaction(FakeLambdaContext()) as conn:
                row = conn.execute(
                    "select %s::int + %s::int as total, %s::text as label", (i, i, f"n{i}")
                ).fetchone()
                assert row == {"total": 2 * i, "label": f"n{i}"}
        return db.logins

    with ThreadPoolExecutor(6) as pool:
        logins = list(pool.map(work, instances))
    assert logins == [1] * 6
    for db in instances:
        db.close()
