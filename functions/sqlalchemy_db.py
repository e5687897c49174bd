"""SQLAlchemy 2 on the instance's kept connection: a Session or a Connection for one transaction.

Why it looks like this:
- `Database.transaction` (db.py) stays the one owner of the connection and of the transaction:
  the idle discard, the retried connect + `BEGIN`, `COMMIT` with its outcome-unknown error,
  `ROLLBACK` on any error. SQLAlchemy only borrows that connection for the block, so a handler
  written with SQLAlchemy keeps every guarantee of one written with psycopg.
- The borrowing: an engine whose `creator` hands out the kept connection and whose pool is
  `NullPool` (the kept connection already is the instance's pool), with a dialect that leaves
  the connection's lifecycle alone: the DBAPI-level begin, commit, rollback and close are no-ops,
  and nothing is set up per borrow (`on_connect`), so the kept connection stays exactly as
  db.py configured it (autocommit with explicit `BEGIN`, no server-side prepared statements).
- The Session joins the block's transaction with `join_transaction_mode="create_savepoint"`:
  its `commit()` and `rollback()` release or roll back a SAVEPOINT, real in the database, while
  the block's own COMMIT happens once, at its end. The block commits the Session on success.
- SQLAlchemy wraps driver errors (`sqlalchemy.exc.DBAPIError`); the driver's error is handed to
  `transaction()` so it classifies it as for any handler (a lost connection or a statement
  timeout becomes `DatabaseUnavailableError`); an error on data reaches the caller as the
  SQLAlchemy exception it raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection as SqlConnection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from .db import Connection, LambdaContextLike, database

# `postgresql+slotguard_kept://`: psycopg's dialect, registered under a name of its own.
DRIVER = "slotguard_kept"
_IN_BLOCK = "slotguard.in_block"


class TransactionControlError(RuntimeError):
    """`commit()`/`rollback()` on the block's Connection: the block ends its transaction."""


class KeptConnectionDialect(PGDialect_psycopg):
    """psycopg's dialect on a borrowed connection: it never begins, ends or closes it."""

    # Only transaction and connection handling differ from psycopg's dialect, so its compiled
    # statement cache applies unchanged (a subclass must say so itself).
    supports_statement_cache = True

    def do_begin(self, dbapi_connection: Any) -> None:
        """`transaction()` has sent BEGIN already."""

    def do_commit(self, dbapi_connection: Any) -> None:
        """The block's COMMIT is `transaction()`'s, at the end of the block."""

    def do_rollback(self, dbapi_connection: Any) -> None:
        """The block's ROLLBACK is `transaction()`'s, when an error leaves the block."""

    def do_close(self, dbapi_connection: Any) -> None:
        """The kept connection outlives the borrow; db.py discards it when it must."""

    def on_connect(self) -> Callable[[Any], None] | None:
        # Nothing per borrow: the kept connection is configured once, by db.py, and a notice
        # handler added per borrow would pile up on it invocation after invocation.
        return None


registry.register(f"postgresql.{DRIVER}", __name__, "KeptConnectionDialect")

_borrowed: ContextVar[Connection | None] = ContextVar("slotguard_borrowed", default=None)


def _creator() -> Connection:
    conn = _borrowed.get()
    if conn is None:
        raise RuntimeError(
            "this engine hands out the instance's kept connection only inside "
            "sqlalchemy_db.session(context) or sqlalchemy_db.connection(context)"
        )
    return conn


def _refuse(action: str) -> Callable[[SqlConnection], None]:
    def listener(conn: SqlConnection) -> None:
        if conn.info.get(_IN_BLOCK):
            raise TransactionControlError(
                f"{action}() inside the block does not end its transaction: the block commits "
                "when it ends and rolls back when an exception leaves it; use "
                "conn.begin_nested() for a part that may roll back on its own"
            )

    return listener


class _Engines:
    """Module-scope state: one engine per loaded copy of this package, i.e. per instance."""

    engine: Engine | None = None


_engines = _Engines()


def engine() -> Engine:
    """This instance's engine (created at first use; it holds no connection of its own)."""
    if _engines.engine is None:
        created = create_engine(
            f"postgresql+{DRIVER}://",
            creator=_creator,
            poolclass=NullPool,
            pool_reset_on_return=None,
        )
        event.listen(created, "commit", _refuse("commit"))
        event.listen(created, "rollback", _refuse("rollback"))
        _engines.engine = created
    return _engines.engine


@contextmanager
def _transaction(
    context: LambdaContextLike | None, *, read_only: bool = False
) -> Iterator[Connection]:
    """`transaction(context)`, given the driver's error when SQLAlchemy wrapped one."""
    wrapped: DBAPIError | None = None
    try:
        with database(context, read_only=read_only).transaction(context) as conn:
            try:
                yield conn
            except DBAPIError as exc:
                if not isinstance(exc.orig, psycopg.Error):
                    raise
                wrapped = exc
                raise exc.orig from exc
    except psycopg.Error as exc:
        if wrapped is not None and exc is wrapped.orig:
            raise wrapped from exc  # an error on data: the caller sees what SQLAlchemy raised
        raise


@contextmanager
def _borrow(conn: Connection) -> Iterator[SqlConnection]:
    token = _borrowed.set(conn)
    # SQLAlchemy reads rows by position; the helper's own callers get dict rows back afterwards.
    plain = cast("psycopg.Connection[Any]", conn)
    row_factory = plain.row_factory
    plain.row_factory = tuple_row
    try:
        with engine().connect() as sql_conn:
            sql_conn.begin()
            sql_conn.info[_IN_BLOCK] = True
            try:
                yield sql_conn
            finally:
                sql_conn.info[_IN_BLOCK] = False
    finally:
        plain.row_factory = row_factory
        _borrowed.reset(token)


@contextmanager
def connection(
    context: LambdaContextLike | None, *, read_only: bool = False
) -> Iterator[SqlConnection]:
    """`with connection(context) as conn:` a SQLAlchemy Connection inside one transaction.

    `read_only=True`: on the read-only path in a READ ONLY transaction (db.py).
    """
    with _transaction(context, read_only=read_only) as conn, _borrow(conn) as sql_conn:
        yield sql_conn


@contextmanager
def session(context: LambdaContextLike | None, *, read_only: bool = False) -> Iterator[Session]:
    """`with session(context) as s:` an ORM Session inside one transaction, committed at the end.

    `expire_on_commit=False`: objects stay readable after the block (to build the response).
    `read_only=True`: on the read-only path in a READ ONLY transaction, where a flush of a
    change fails with 25006.
    """
    with _transaction(context, read_only=read_only) as conn, _borrow(conn) as sql_conn:
        orm = Session(
            bind=sql_conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield orm
            orm.commit()  # flush and release the SAVEPOINT; the block's COMMIT follows
        except BaseException:
            # The block's transaction is rolled back as a whole; a failed savepoint rollback
            # (the connection is gone) must not hide the error that ended the block.
            with contextlib.suppress(SQLAlchemyError, psycopg.Error):
                orm.close()
            raise
        orm.close()
