"""What went wrong with the database, in terms a retry decision and an HTTP answer can use.

psycopg reports connection-time failures (PostgreSQL's FATALs at login and PgBouncer's own
refusals alike) as `OperationalError` with `sqlstate` None and only libpq's message text, so the
class is recovered from the SQLSTATE when there is one and from the server's message otherwise.
No library maps PgBouncer's messages to SQLSTATEs, hence this table.
"""

from __future__ import annotations

import re
from enum import StrEnum

import psycopg


class FailureClass(StrEnum):
    """Why a connection or transaction failed; also the metric suffix."""

    TOO_MANY_CONNECTIONS = "TooManyConnections"  # 53300
    CANNOT_CONNECT_NOW = "CannotConnectNow"  # 57P03: starting up, shutting down, recovery
    POOLER_REFUSAL = "PoolerRefusal"  # PgBouncer's own 08P01 refusals
    CONNECTION = "Connection"  # class 08 and network-level failures
    AUTHENTICATION = "Authentication"  # 28P01 / 28000
    STATEMENT_TIMEOUT = "StatementTimeout"  # 57014
    SESSION_TERMINATED = "SessionTerminated"  # 25P03, 57P01: the server ended the session
    BUDGET_EXHAUSTED = "BudgetExhausted"
    CONFIGURATION = "Configuration"
    OTHER = "Other"


RETRYABLE_AT_CONNECT = frozenset(
    {
        FailureClass.TOO_MANY_CONNECTIONS,
        FailureClass.CANNOT_CONNECT_NOW,
        FailureClass.POOLER_REFUSAL,
        FailureClass.CONNECTION,
    }
)

# Message fragments (lower case) -> the SQLSTATE they stand for, for failures without one.
# Order matters: PgBouncer's refusals come before the generic connection-loss texts.
_MESSAGE_STATES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), state)
    for pattern, state in (
        (r"too many clients already|remaining connection slots are reserved", "53300"),
        (r"too many connections for (role|database)", "53300"),
        (r"database system is (starting up|shutting down|in recovery mode)", "57P03"),
        (r"not yet accepting connections|not accepting connections", "57P03"),
        (r"no more connections allowed|query_wait_timeout|pgbouncer cannot connect", "08P01"),
        (r"server login has been failing|client_login_timeout|server_login_retry", "08P01"),
        (r"pgbouncer is shutting down|pooler is shutting down|server_fast_close", "08P01"),
        (r"password authentication failed|sasl authentication failed", "28P01"),
        (r"authentication failed for user|no pg_hba\.conf entry", "28P01"),
        (r"idle-in-transaction timeout|idle_in_transaction_session_timeout", "25P03"),
        (r"client_idle_timeout|idle_transaction_timeout", "08P01"),
        (r"terminating connection due to administrator command", "57P01"),
        (r"connection refused|timeout expired|could not connect|could not receive", "08006"),
        (r"server closed the connection|connection (is )?(lost|closed)|eof detected", "08006"),
        (r"ssl syscall error|broken pipe|connection reset|no connection to the server", "08006"),
        (r"could not send data|could not translate host name|network is unreachable", "08006"),
    )
)


_EXACT_STATES = {
    "53300": FailureClass.TOO_MANY_CONNECTIONS,
    "57P03": FailureClass.CANNOT_CONNECT_NOW,
    "57014": FailureClass.STATEMENT_TIMEOUT,
    "25P03": FailureClass.SESSION_TERMINATED,
    "57P01": FailureClass.SESSION_TERMINATED,
    "57P02": FailureClass.SESSION_TERMINATED,
}


def _class_of_state(sqlstate: str, message: str) -> FailureClass:
    if sqlstate in _EXACT_STATES:
        return _EXACT_STATES[sqlstate]
    if sqlstate.startswith("28"):
        return FailureClass.AUTHENTICATION
    if sqlstate.startswith("08") and _is_pooler_text(message):
        return FailureClass.POOLER_REFUSAL
    if sqlstate.startswith("08"):
        return FailureClass.CONNECTION
    return FailureClass.OTHER


def _is_pooler_text(message: str) -> bool:
    return any(state == "08P01" and pattern.search(message) for pattern, state in _MESSAGE_STATES)


def classify(exc: BaseException) -> FailureClass:
    """The failure class of a psycopg error (or OTHER for anything else)."""
    if not isinstance(exc, psycopg.Error):
        return FailureClass.OTHER
    message = str(exc).lower()
    if exc.sqlstate:
        return _class_of_state(exc.sqlstate, message)
    for pattern, state in _MESSAGE_STATES:
        if pattern.search(message):
            return _class_of_state(state, message)
    if isinstance(exc, psycopg.OperationalError):
        # libpq failures without a server message are network-level: treat as class 08.
        return FailureClass.CONNECTION
    return FailureClass.OTHER


def is_retryable_at_connect(exc: BaseException) -> bool:
    """True for failures where nothing ran and trying again later can succeed."""
    return classify(exc) in RETRYABLE_AT_CONNECT


class DatabaseUnavailableError(RuntimeError):
    """The database could not serve this invocation; handlers answer 503 with `reason`."""

    def __init__(self, reason: str, failure: FailureClass, attempts: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.attempts = attempts


class TransactionOutcomeUnknownError(DatabaseUnavailableError):
    """The connection broke while COMMIT was in flight: the transaction may or may not be in."""
