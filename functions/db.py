"""The connection helper every handler uses: one kept connection per function instance.

Why it looks like this:
- A Lambda instance serves one invocation at a time, so one connection per instance (opened at
  first use, kept at module scope across warm invocations) is the most it ever needs, and the
  pooler multiplexes those client connections onto a few server connections.
- Transaction pooling hands each *transaction* a different server connection, so session state
  is never relied on and timeouts live on the role, not in startup parameters. Prepared
  statements are used only where the pooler keeps them across server connections (PgBouncer
  1.21+ with `max_prepared_statements`): `DB_PREPARE_THRESHOLD` says so, else they are off.
- A frozen instance can wake up holding a connection the pooler already reaped, so a connection
  idle longer than `DB_IDLE_DISCARD_S` (set below the pooler's client idle timeout) is discarded,
  and one whose socket has anything to say while idle (the server's goodbye) is replaced.
- Reads may take a read-only path (`transaction(context, read_only=True)`): its own kept
  connection to `DB_READ_HOST`/`DB_READ_NAME` (the pooler's read pool on the readers), and every
  transaction on it starts `BEGIN READ ONLY`, so a write there fails with PostgreSQL's 25006
  whichever instance it reached (the read pool also sets `default_transaction_read_only`).
- Connection and `BEGIN` are one retryable step: nothing of the caller's transaction has run
  yet, so a broken connection or a refusal (53300, 57P03, class 08, PgBouncer's 08P01) is retried
  with full-jitter exponential backoff (tenacity), bounded by the invocation's remaining time
  minus room to answer. Once the caller's work has started nothing is retried here: its outcome
  might be unknown or it failed on data, which only the caller can judge.
"""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from tenacity import RetryCallState, Retrying, retry_if_exception, retry_never
from tenacity.wait import wait_random_exponential

from .config import DbSettings, load_settings
from .credentials import CredentialSource, credential_source
from .errors import (
    DatabaseUnavailableError,
    FailureClass,
    TransactionOutcomeUnknownError,
    classify,
    is_retryable_at_connect,
)
from .observability import logger, record_connect, record_discard, record_failure, record_retry

# Time kept back from the invocation's remaining time so a failure can still be answered.
ANSWER_RESERVE_S = 1.0
# Full jitter: each wait is uniform in [0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)].
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0
# PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes.
APPLICATION_NAME_MAX = 63

Connection = psycopg.Connection[DictRow]


class LambdaContextLike(Protocol):
    """The part of the Lambda context object the helper reads."""

    @property
    def function_name(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _socket_has_data(conn: Connection) -> bool:
    """True when an idle connection's socket is readable: the server closed it or said goodbye.

    An idle connection receives nothing in normal operation (no LISTEN is used), so readable data
    means a FATAL (idle timeouts, admin termination) or EOF, and the connection is unusable.
    """
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class Database:
    """The per-instance connection state and the retry policy around opening a transaction."""

    def __init__(
        self,
        settings: DbSettings,
        credentials: CredentialSource,
        function_name: str,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.read_only = read_only
        self.application_name = function_name[:APPLICATION_NAME_MAX]
        self.connection: Connection | None = None
        self.logins = 0  # connections this instance has opened (server logins through a pooler)
        self.retries = 0
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._last_used = (clock(), wall_clock())

    # -- the kept connection -------------------------------------------------------------------

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _discard(self, reason: str) -> None:
        logger.info("discarding database connection", extra={"reason": reason})
        record_discard(reason)
        self.close()

    def idle_seconds(self) -> float:
        # Wall-clock time too: a frozen instance's monotonic clock may not count the freeze.
        mono, wall = self._last_used
        return max(self._clock() - mono, self._wall_clock() - wall)

    def _touch(self) -> None:
        self._last_used = (self._clock(), self._wall_clock())

    def _reusable(self) -> Connection | None:
        conn = self.connection
        if conn is None:
            return None
        if conn.closed or conn.broken:
            self._discard("Broken")
        elif self.idle_seconds() > self.settings.idle_discard_s:
            self._discard("Idle")
        elif conn.info.transaction_status != TransactionStatus.IDLE:
            self._discard("NotIdle")
        elif _socket_has_data(conn):
            self._discard("ClosedByServer")
        return self.connection

    def _connect(self, timeout_s: int) -> Connection:
        s = self.settings
        refreshed = False
        while True:
            creds = self.credentials.get()
            started = self._clock()
            try:
                conn = psycopg.connect(
                    host=s.host,
                    port=s.port,
                    dbname=s.dbname,
                    user=creds.user,
                    password=creds.password,
                    sslmode=s.sslmode,
                    sslrootcert=s.sslrootcert,
                    connect_timeout=timeout_s,
                    application_name=self.application_name,
                    autocommit=True,
                    prepare_threshold=s.prepare_threshold,
                    row_factory=dict_row,
                )
            except psycopg.Error as exc:
                if classify(exc) is FailureClass.AUTHENTICATION and not refreshed:
                    # A rotated password: fetch the secret again, once, and retry at once.
                    logger.info("authentication failed; refreshing credentials")
                    self.credentials.refresh()
                    refreshed = True
                    continue
                raise
            record_connect((self._clock() - started) * 1000.0)
            self.logins += 1
            return conn

    # -- opening a transaction, with retries -----------------------------------------------------

    def _deadline(self, context: LambdaContextLike | None) -> float:
        budget = self.settings.retry_budget_s
        if context is not None:
            remaining = context.get_remaining_time_in_millis() / 1000.0 - ANSWER_RESERVE_S
            budget = min(budget, remaining)
        return self._clock() + max(0.0, budget)

    def _attempt(self, deadline: float) -> Connection:
        conn = self._reusable()
        if conn is None:
            left = math.ceil(deadline - self._clock())
            conn = self._connect(max(2, min(self.settings.connect_timeout_s, left)))
            self.connection = conn
        try:
            conn.execute("BEGIN READ ONLY" if self.read_only else "BEGIN")
        except psycopg.Error:
            # Nothing of the caller's work has run: drop this connection, the retry opens another.
            self.close()
            raise
        return conn

    def begin(self, context: LambdaContextLike | None) -> Connection:
        """A connection inside a fresh transaction, or DatabaseUnavailableError within budget."""
        deadline = self._deadline(context)
        started = self._clock()

        def stop(state: RetryCallState) -> bool:
            return self._clock() + state.upcoming_sleep >= deadline

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            record_retry()
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "database connect failed; retrying",
                extra={
                    "attempt": state.attempt_number,
                    "sleep_s": round(state.upcoming_sleep, 3),
                    "failure": classify(error) if error else None,
                    "error": _one_line(error) if error else None,
                },
            )

        retrying = Retrying(
            stop=stop,
            wait=wait_random_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_MAX_S),
            retry=(
                retry_if_exception(is_retryable_at_connect)
                if self.settings.retries == "on"
                else retry_never
            ),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, deadline)
        except psycopg.Error as exc:
            failure = classify(exc)
            record_failure(failure)
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise DatabaseUnavailableError(
                f"database unavailable ({failure.value}) after {attempts} attempt(s) in "
                f"{self._clock() - started:.1f}s: {_one_line(exc)}",
                failure,
                attempts,
            ) from exc

    @contextmanager
    def transaction(self, context: LambdaContextLike | None) -> Iterator[Connection]:
        """Run the caller's block in one transaction: COMMIT on success, ROLLBACK on error.

        A lost connection or cancelled statement inside the block becomes a
        DatabaseUnavailableError (TransactionOutcomeUnknownError when COMMIT itself was lost);
        errors on data are re-raised unchanged for the caller to turn into a 4xx.
        """
        conn = self.begin(context)
        try:
            try:
                yield conn
            except psycopg.Error as exc:
                self._abandon(conn)
                raise self._translate(exc) from exc
            except BaseException:
                self._abandon(conn)
                raise
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    self.close()
                    record_failure(classify(exc))
                    raise TransactionOutcomeUnknownError(
                        "connection lost while committing; the transaction may or may not "
                        f"have been applied: {_one_line(exc)}",
                        classify(exc),
                    ) from exc
                raise
        finally:
            self._touch()

    def _abandon(self, conn: Connection) -> None:
        if conn.broken or conn.closed:
            self.close()
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self.close()

    def _translate(self, exc: psycopg.Error) -> Exception:
        failure = classify(exc)
        if failure is FailureClass.STATEMENT_TIMEOUT:
            record_failure(failure)
            return DatabaseUnavailableError(
                f"statement cancelled by the role's statement_timeout (57014): {_one_line(exc)}",
                failure,
            )
        if self.connection is None or failure is FailureClass.SESSION_TERMINATED:
            # The session is gone (idle-in-transaction timeout, termination, network): the
            # server rolled the transaction back; the next invocation reconnects.
            self.close()
            record_failure(failure)
            return DatabaseUnavailableError(
                "connection lost during the transaction, which was not committed "
                f"({failure.value}): {_one_line(exc)}",
                failure,
            )
        return exc


# -- the instance's helper ---------------------------------------------------------------------


class _Instance:
    """Module-scope state: one per loaded copy of this package, i.e. per function instance."""

    database: Database | None = None
    reader: Database | None = None


_instance = _Instance()


def function_name(context: LambdaContextLike | None = None) -> str:
    if context is not None and getattr(context, "function_name", None):
        return context.function_name
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "slotguard-function")


def database(context: LambdaContextLike | None = None, *, read_only: bool = False) -> Database:
    """This instance's helper (its read-only one with `read_only`), created at first use."""
    if read_only:
        if _instance.reader is None:
            settings = load_settings().for_reads()
            _instance.reader = Database(
                settings, credential_source(settings), function_name(context), read_only=True
            )
        return _instance.reader
    if _instance.database is None:
        settings = load_settings()
        _instance.database = Database(settings, credential_source(settings), function_name(context))
    return _instance.database


def transaction(
    context: LambdaContextLike | None, *, read_only: bool = False
) -> AbstractContextManager[Connection]:
    """`with transaction(context) as conn:` on this instance's kept connection.

    `read_only=True`: on the read-only path (the readers, where the stack has them), in a
    READ ONLY transaction; a write in it fails with 25006 (read_only_sql_transaction).
    """
    return database(context, read_only=read_only).transaction(context)


def reset() -> None:
    """Forget this instance's connections and settings (tests, and re-reading the environment)."""
    for kept in (_instance.database, _instance.reader):
        if kept is not None:
            kept.close()
    _instance.database = None
    _instance.reader = None
