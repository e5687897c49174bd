"""Health: can this function reach the database through the pooler, and how full is the database?

Answers 200 below `HEALTH_ALARM_PERCENT` of `max_connections` and 503 at or above it (or when
the database cannot be reached), so a load balancer or an alarm can act before the last slots go.
The counts come from `connection_utilisation()`, a function the migrations create that runs with
its owner's right to read pg_stat_activity, so the application role itself never gets that right.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from .db import database, transaction
from .errors import DatabaseUnavailableError
from .observability import flush, logger, metrics, with_lambda_context


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    # The Function URL / HTTP API v2 response shape, also readable when invoked directly.
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", "cache-control": "no-store"},
        "body": json.dumps(body, sort_keys=True),
    }


# A direct invocation may ask for other roles' limits and settings (`slotguard verify` checks the
# workloads' roles this way); pg_roles shows them to every role anyway.
MAX_ROLES = 20
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def requested_roles(event: Any) -> list[str]:
    """Role names from a direct invocation's `{"roles": [...]}`; none from anything else."""
    roles = event.get("roles") if isinstance(event, dict) else None
    if not isinstance(roles, list):
        return []
    return [r for r in roles if isinstance(r, str) and ROLE_NAME.match(r)][:MAX_ROLES]


def _role_document(row: Any) -> dict[str, Any]:
    return {
        "connection_limit": row["rolconnlimit"],
        "settings": dict(item.split("=", 1) for item in row["rolconfig"]),
    }


def check(
    context: LambdaContext | None, roles: list[str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The status code and body of a health check."""
    settings = database(context).settings
    alarm = settings.health_alarm_percent
    try:
        with transaction(context) as conn:
            row = conn.execute(
                "SELECT total, active, idle, idle_in_transaction, max_connections"
                " FROM connection_utilisation()"
            ).fetchone()
            # pg_roles is readable by every role: the settings the role logs in with.
            role = conn.execute(
                "SELECT rolname, rolconnlimit, coalesce(rolconfig, '{}') AS rolconfig"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            others = (
                conn.execute(
                    "SELECT rolname, rolconnlimit, coalesce(rolconfig, '{}') AS rolconfig"
                    " FROM pg_roles WHERE rolname = ANY(%s)",
                    (roles,),
                ).fetchall()
                if roles
                else []
            )
            # The peer the server sees on this session's backend: the pooler when one is in
            # between, this function's own socket when it connected directly.
            peer = conn.execute(
                "SELECT host(inet_client_addr()) AS addr, inet_client_port() AS port"
            ).fetchone()
            local = _local_address(conn.pgconn.socket)
    except DatabaseUnavailableError as exc:
        return 503, {"status": "unavailable", "reason": exc.reason, "failure": exc.failure.value}
    assert row is not None  # the function always returns one row
    assert role is not None  # current_user is always a role
    percent = round(100.0 * row["total"] / row["max_connections"], 1)
    metrics.add_metric(name="DbConnectionUtilisation", unit=MetricUnit.Percent, value=percent)
    saturated = percent >= alarm
    body = {
        "status": "saturated" if saturated else "ok",
        "connections": {
            "total": row["total"],
            "active": row["active"],
            "idle": row["idle"],
            "idle_in_transaction": row["idle_in_transaction"],
            "max": row["max_connections"],
            "percent": percent,
        },
        "alarm_percent": alarm,
        # Where this function connected (the pooler's endpoint on AWS) and as which role, so a
        # deployed stack can be checked from outside without a connection of its own.
        "via": {"host": settings.host, "port": settings.port},
        # The path the connection took: the database server's view of its client against this
        # function's own end of the socket. Equal means nothing sits in between.
        "path": {
            "function": local,
            "server_saw": f"{peer['addr']}:{peer['port']}" if peer and peer["addr"] else None,
        },
        "role": {
            "name": role["rolname"],
            "connection_limit": role["rolconnlimit"],
            "settings": dict(item.split("=", 1) for item in role["rolconfig"]),
        },
    }
    if roles:
        body["roles"] = {row["rolname"]: _role_document(row) for row in others}
    if saturated:
        body["reason"] = f"{percent}% of max_connections in use (alarm at {alarm}%)"
    return (503 if saturated else 200), body


def _local_address(fd: int) -> str | None:
    """`host:port` of this end of the database socket (None when it cannot be read)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            name = sock.getsockname()
    except OSError:
        return None
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else None


@with_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        status, body = check(context, requested_roles(event))
        if status != 200:
            logger.warning("health check failed", extra=body)
        return _response(status, body)
    finally:
        flush()
