"""Name why an invocation failed, from the error text the function returned.

The causes are the ones a connection storm produces; each is matched on the wording PostgreSQL,
PgBouncer, RDS Proxy, libpq and Lambda actually use, so a report says *which* limit was hit.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"


class Cause(StrEnum):
    TOO_MANY_CONNECTIONS = "too many connections"
    POOLER_QUEUE_WAIT = "pooler queue wait timeout"
    STATEMENT_TIMEOUT = "statement timeout"
    CONNECT_TIMEOUT = "connect timeout"
    FUNCTION_TIMEOUT = "function timeout"
    OTHER = "other"


# First match wins; the more specific wordings come first.
_PATTERNS: list[tuple[Cause, re.Pattern[str]]] = [
    # Lambda stopped the invocation at the function timeout.
    (Cause.FUNCTION_TIMEOUT, re.compile(r"task timed out after|sandbox\.timedout")),
    # PostgreSQL: "sorry, too many clients already", "remaining connection slots are reserved
    # for ...", "too many connections for role"/"for database"; PgBouncer: "no more connections
    # allowed (max_client_conn)"; RDS Proxy: "too many connections".
    (
        Cause.TOO_MANY_CONNECTIONS,
        re.compile(
            r"too many (clients|connections)|remaining connection slots are reserved"
            r"|no more connections allowed|max_client_conn"
        ),
    ),
    # PgBouncer: "query_wait_timeout"; RDS Proxy: "Timed-out waiting to acquire database
    # connection" (ConnectionBorrowTimeout).
    (
        Cause.POOLER_QUEUE_WAIT,
        re.compile(r"query_wait_timeout|timed-?out waiting to acquire database connection"),
    ),
    # PostgreSQL: "canceling statement due to statement timeout"; PgBouncer: "query_timeout".
    (Cause.STATEMENT_TIMEOUT, re.compile(r"statement timeout|query_timeout")),
    # libpq: "timeout expired" (connect_timeout); a helper's own "connect timeout" wording.
    (
        Cause.CONNECT_TIMEOUT,
        re.compile(r"timeout expired|connect(ion)? ?timeout|timed out connecting"),
    ),
]


def classify_error(text: str) -> Cause:
    """The cause of a failed invocation from its error body (any text; case does not matter)."""
    lowered = text.lower()
    for cause, pattern in _PATTERNS:
        if pattern.search(lowered):
            return cause
    return Cause.OTHER
