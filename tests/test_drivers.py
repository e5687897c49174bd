"""The drivers and ORMs teams bring, at their default settings, bursting the local pooler.

Each driver opens a few hundred connections through PgBouncer (transaction pooling, TLS, SCRAM),
several at once, and runs two parameterised statements eight times each on every connection:
enough repeats that psycopg 3 prepares (its `prepare_threshold` is 5), while asyncpg prepares
every statement. The pool is small, so clients share server connections all the time. With
`max_prepared_statements` on (PgBouncer 1.21+, the budget's 200) every connection succeeds; with
it off, the preparing drivers fail, which is the failure the setting exists to remove.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import pg8000.dbapi
import psycopg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from infra.budget import DEFAULT_MAX_PREPARED_STATEMENTS
from slotguard.local.pgbouncer import LocalPgBouncer

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=30)]

CONNECTIONS = 240  # per driver
CONCURRENCY = 32  # connections open at once
REPEATS = 8  # executions of each statement per connection (psycopg prepares from the 6th)
POOL_SIZE = 4  # server connections: many clients share each one
USER, PASSWORD, DBNAME = "driver_user", "driver-password", "postgres"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    ca_file: str
    conninfo: str

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def _target(bouncer: LocalPgBouncer) -> Target:
    return Target(
        "127.0.0.1",
        bouncer.port,
        str(bouncer.tls.ca_cert),
        bouncer.conninfo(USER, PASSWORD, DBNAME, connect_timeout=60),
    )


def _check(i: int, r: int, total: object, label: object) -> None:
    assert total == i + r, (total, i + r)
    assert label == f"c{i}-{r}", (label, i, r)


# -- one connection's work, per driver (defaults everywhere; only where to connect is given) --


def psycopg3_sync(t: Target, i: int) -> None:
    with psycopg.connect(t.conninfo) as conn:
        for r in range(REPEATS):
            row = conn.execute("select %s::int + %s::int", (i, r)).fetchone()
            assert row is not None
            label = conn.execute("select %s::text || '-' || %s::text", (f"c{i}", r)).fetchone()
            assert label is not None
            _check(i, r, row[0], label[0])
        conn.commit()


async def psycopg3_async(t: Target, i: int) -> None:
    async with await psycopg.AsyncConnection.connect(t.conninfo) as conn:
        for r in range(REPEATS):
            cur = await conn.execute("select %s::int + %s::int", (i, r))
            row = await cur.fetchone()
            cur = await conn.execute("select %s::text || '-' || %s::text", (f"c{i}", r))
            label = await cur.fetchone()
            assert row is not None
            assert label is not None
            _check(i, r, row[0], label[0])
        await conn.commit()


def psycopg2_sync(t: Target, i: int) -> None:
    conn = psycopg2.connect(t.conninfo)
    try:
        with conn.cursor() as cur:
            for r in range(REPEATS):
                cur.execute("select %s::int + %s::int", (i, r))
                total = cur.fetchone()[0]
                cur.execute("select %s::text || '-' || %s::text", (f"c{i}", r))
                _check(i, r, total, cur.fetchone()[0])
        conn.commit()
    finally:
        conn.close()


def pg8000_sync(t: Target, i: int) -> None:
    conn = pg8000.dbapi.connect(
        user=USER,
        password=PASSWORD,
        host=t.host,
        port=t.port,
        database=DBNAME,
        ssl_context=t.ssl_context(),
        timeout=60,
    )
    try:
        cur = conn.cursor()
        for r in range(REPEATS):
            cur.execute("select cast(%s as int) + cast(%s as int)", (i, r))
            total = cur.fetchone()[0]
            cur.execute("select cast(%s as text) || '-' || cast(%s as text)", (f"c{i}", r))
            _check(i, r, total, cur.fetchone()[0])
        conn.commit()
    finally:
        conn.close()


async def asyncpg_async(t: Target, i: int) -> None:
    conn = await asyncpg.connect(
        host=t.host,
        port=t.port,
        user=USER,
        password=PASSWORD,
        database=DBNAME,
        ssl=t.ssl_context(),
        timeout=60,
    )
    try:
        for r in range(REPEATS):
            total = await conn.fetchval("select $1::int + $2::int", i, r)
            label = await conn.fetchval("select $1::text || '-' || $2::text", f"c{i}", str(r))
            _check(i, r, total, label)
    finally:
        await conn.close()


_TOTAL = sqlalchemy.text("select cast(:a as integer) + cast(:b as integer)")
_LABEL = sqlalchemy.text("select cast(:a as text) || '-' || cast(:b as text)")


def _sqlalchemy_url(t: Target, driver: str) -> sqlalchemy.URL:
    query = {"sslmode": "verify-full", "sslrootcert": t.ca_file} if driver == "psycopg" else {}
    return sqlalchemy.URL.create(
        f"postgresql+{driver}",
        username=USER,
        password=PASSWORD,
        host=t.host,
        port=t.port,
        database=DBNAME,
        query=query,
    )


def sqlalchemy_psycopg(t: Target, i: int, engine: sqlalchemy.Engine) -> None:
    with engine.connect() as conn:
        for r in range(REPEATS):
            total = conn.execute(_TOTAL, {"a": i, "b": r}).scalar_one()
            label = conn.execute(_LABEL, {"a": f"c{i}", "b": str(r)}).scalar_one()
            _check(i, r, total, label)
        conn.commit()


async def sqlalchemy_asyncpg(t: Target, i: int, engine: Any) -> None:
    async with engine.connect() as conn:
        for r in range(REPEATS):
            total = (await conn.execute(_TOTAL, {"a": i, "b": r})).scalar_one()
            label = (await conn.execute(_LABEL, {"a": f"c{i}", "b": str(r)})).scalar_one()
            _check(i, r, total, label)
        await conn.commit()


# -- bursts ------------------------------------------------------------------------------------


def _burst_sync(work: Callable[[int], None]) -> list[BaseException]:
    def guarded(i: int) -> BaseException | None:
        try:
            work(i)
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return [e for e in pool.map(guarded, range(CONNECTIONS)) if e is not None]


def _burst_async(work: Callable[[int], Coroutine[Any, Any, None]]) -> list[BaseException]:
    async def main() -> list[BaseException]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def guarded(i: int) -> BaseException | None:
            async with gate:
                try:
                    await work(i)
                except Exception as exc:
                    return exc
            return None

        results = await asyncio.gather(*(guarded(i) for i in range(CONNECTIONS)))
        return [e for e in results if e is not None]

    return asyncio.run(main())


def _sqlalchemy_psycopg_burst(t: Target) -> list[BaseException]:
    engine = sqlalchemy.create_engine(_sqlalchemy_url(t, "psycopg"), poolclass=NullPool)
    try:
        return _burst_sync(lambda i: sqlalchemy_psycopg(t, i, engine))
    finally:
        engine.dispose()


def _sqlalchemy_asyncpg_burst(t: Target) -> list[BaseException]:
    engines: list[Any] = []

    async def work(i: int) -> None:
        if not engines:  # created inside the burst's event loop, which asyncpg binds to
            engines.append(
                create_async_engine(
                    _sqlalchemy_url(t, "asyncpg"),
                    poolclass=NullPool,
                    connect_args={"ssl": t.ssl_context(), "timeout": 60},
                )
            )
        await sqlalchemy_asyncpg(t, i, engines[0])

    return _burst_async(work)


RUNNERS: dict[str, Callable[[Target], list[BaseException]]] = {
    "psycopg3": lambda t: _burst_sync(lambda i: psycopg3_sync(t, i)),
    "psycopg3-async": lambda t: _burst_async(lambda i: psycopg3_async(t, i)),
    "sqlalchemy-psycopg3": _sqlalchemy_psycopg_burst,
    "asyncpg": lambda t: _burst_async(lambda i: asyncpg_async(t, i)),
    "sqlalchemy-asyncpg": _sqlalchemy_asyncpg_burst,
    "psycopg2": lambda t: _burst_sync(lambda i: psycopg2_sync(t, i)),
    "pg8000": lambda t: _burst_sync(lambda i: pg8000_sync(t, i)),
}


def burst(driver: str, t: Target) -> list[BaseException]:
    """Every connection of one driver's burst; the failures it met."""
    return RUNNERS[driver](t)


DRIVERS = tuple(RUNNERS)
# Drivers that prepare statements at their defaults and so need the pooler's support (the async
# psycopg and SQLAlchemy-on-asyncpg use the same mechanisms as these three), and those that never
# leave a named statement behind.
PREPARING = ("psycopg3", "sqlalchemy-psycopg3", "asyncpg")
NEVER_PREPARE = ("psycopg2", "pg8000")


@pytest.fixture(scope="module")
def driver_server(postgres_factory):
    return postgres_factory(max_connections=30)


def _pooler(pgbouncer_factory, server, max_prepared_statements: int) -> LocalPgBouncer:
    bouncer: LocalPgBouncer = pgbouncer_factory(
        server,
        users={USER: PASSWORD},
        pool_size=POOL_SIZE,
        max_client_conn=CONNECTIONS + 100,
        query_wait_timeout_s=60,
        client_login_timeout_s=60,
        # PostgreSQL's 4096 SCRAM rounds: scramp (pg8000) refuses fewer, as a careful client should.
        scram_iterations=4096,
        max_prepared_statements=max_prepared_statements,
    )
    return bouncer


@pytest.fixture(scope="module")
def pooler_with_prepared(pgbouncer_factory, driver_server) -> LocalPgBouncer:
    return _pooler(pgbouncer_factory, driver_server, DEFAULT_MAX_PREPARED_STATEMENTS)


@pytest.fixture(scope="module")
def pooler_without_prepared(pgbouncer_factory, driver_server) -> LocalPgBouncer:
    return _pooler(pgbouncer_factory, driver_server, 0)


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_connection_of_a_burst_succeeds_at_driver_defaults(
    driver: str, pooler_with_prepared: LocalPgBouncer
) -> None:
    failures = burst(driver, _target(pooler_with_prepared))
    assert not failures, f"{len(failures)} of {CONNECTIONS} failed: {failures[:3]}"


@pytest.mark.parametrize("driver", PREPARING)
def test_without_prepared_statement_support_the_preparing_drivers_fail(
    driver: str, pooler_without_prepared: LocalPgBouncer
) -> None:
    # What max_prepared_statements = 0 does to a driver at its defaults: a statement prepared on
    # one server connection is missing on the next, or collides with another client's.
    failures = burst(driver, _target(pooler_without_prepared))
    print(f"\n{driver}: {len(failures)} of {CONNECTIONS} failed, e.g. {failures[:1]}")
    assert failures, "expected prepared-statement failures with max_prepared_statements = 0"
    messages = " ".join(str(f) for f in failures)
    assert "prepared statement" in messages, failures[:3]


@pytest.mark.parametrize("driver", NEVER_PREPARE)
def test_drivers_that_never_prepare_need_nothing_from_the_pooler(
    driver: str, pooler_without_prepared: LocalPgBouncer
) -> None:
    # psycopg2 binds parameters client-side; pg8000 uses the unnamed statement: neither leaves a
    # named statement behind, so they work even with max_prepared_statements = 0.
    failures = burst(driver, _target(pooler_without_prepared))
    assert not failures, f"{len(failures)} of {CONNECTIONS} failed: {failures[:3]}"


def test_extra_float_digits_is_accepted_and_options_are_refused(
    pooler_with_prepared: LocalPgBouncer,
) -> None:
    # pgjdbc and lib/pq send extra_float_digits as a startup parameter; asyncpg sends its
    # server_settings the same way, so it stands in for them here.
    t = _target(pooler_with_prepared)

    async def connect(server_settings: dict[str, str]) -> float:
        conn = await asyncpg.connect(
            host=t.host,
            port=t.port,
            user=USER,
            password=PASSWORD,
            database=DBNAME,
            ssl=t.ssl_context(),
            server_settings=server_settings,
        )
        try:
            return float(await conn.fetchval("select 0.1::float8 + 0.2::float8"))
        finally:
            await conn.close()

    # Dropped, and nothing lost: PostgreSQL 12+ prints the shortest exact float either way.
    assert asyncio.run(connect({"extra_float_digits": "3"})) == 0.1 + 0.2
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        asyncio.run(connect({"statement_timeout": "1"}))
    # `options` is refused too: a timeout asked for there would otherwise be silently lost.
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(t.conninfo, options="-c statement_timeout=1").close()
