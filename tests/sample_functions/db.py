"""A minimal connection helper: one kept connection per instance, no retries (the naive wiring)."""

from __future__ import annotations

import os

import psycopg

_conn: psycopg.Connection | None = None


def connection() -> psycopg.Connection:
    global _conn  # noqa: PLW0603 - the kept connection is module state, per instance
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(
            host=os.environ["DB_HOST"],
            port=int(os.environ["DB_PORT"]),
            dbname=os.environ["DB_NAME"],
            user=os.environ["DB_USER"],
            password=os.environ.get("DB_PASSWORD", ""),
            sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
            sslrootcert=os.environ.get("DB_SSLROOTCERT"),
            connect_timeout=int(os.environ.get("DB_CONNECT_TIMEOUT_S", "5")),
            application_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "sample"),
            autocommit=True,
        )
    return _conn
