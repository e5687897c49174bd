"""Poll PgBouncer's admin console and publish the pooler's health to CloudWatch.

Each process of a task is polled over its own unix socket (through TCP, `so_reuseport` would land
on any one of them) with `SHOW POOLS`, `SHOW STATS`, `SHOW LISTS` and `SHOW CONFIG`, and the
figures are summed into one datapoint per metric (`pgbouncer.metrics`). The admin console speaks
only the simple query protocol, so the connection uses psycopg's `ClientCursor` in autocommit
mode (no server-side parameter binding, no BEGIN).

Rates (transactions per second, average wait) are computed from the deltas of the cumulative
counters between two polls rather than read from PgBouncer's `avg_*` columns, which only move every
`stats_period`: the figures then follow the poll interval, whatever that period is.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgbouncer import certificate, metrics

log = logging.getLogger("pgbouncer.exporter")

ADMIN_DATABASE = "pgbouncer"
MAX_DATUMS_PER_CALL = 1000


@dataclass(frozen=True)
class Sample:
    """The summed figures of every process at one instant."""

    at: float
    client_active: int = 0
    client_waiting: int = 0
    server_active: int = 0
    server_idle: int = 0
    server_connections: int = 0
    max_wait_s: float = 0.0
    client_connections: int = 0
    client_capacity: int = 0
    xact_total: int = 0
    wait_total_us: int = 0
    processes: int = 0
    # Roles with their own `[users]` pool_size -> (clients waiting, oldest wait in s).
    users: Mapping[str, tuple[int, float]] = field(default_factory=dict)


def _int(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if value is not None else 0


def show_rows(cur: psycopg.Cursor[Any], command: str) -> list[dict[str, Any]]:
    """An admin-console `SHOW` command's rows as dicts (the cursor must be a ClientCursor)."""
    cur.execute(command)
    names = [column.name for column in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def poll_process(conninfo: str, *, database: str | None = None, at: float | None = None) -> Sample:
    """One process's figures; pools of the admin console itself are left out."""
    with (
        psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn,
        conn.cursor() as cur,
    ):
        pools = [
            p
            for p in show_rows(cur, "SHOW POOLS")
            if p["database"] != ADMIN_DATABASE and (database is None or p["database"] == database)
        ]
        stats = [
            s
            for s in show_rows(cur, "SHOW STATS")
            if s["database"] != ADMIN_DATABASE and (database is None or s["database"] == database)
        ]
        lists = {str(r["list"]): _int(r, "items") for r in show_rows(cur, "SHOW LISTS")}
        config = {str(r["key"]): r["value"] for r in show_rows(cur, "SHOW CONFIG")}
        own_pools = {str(u["name"]) for u in show_rows(cur, "SHOW USERS") if _own_pool(u)}
    users = {
        user: (
            sum(_int(p, "cl_waiting") for p in pools if p["user"] == user),
            max(
                (
                    _int(p, "maxwait") + _int(p, "maxwait_us") / 1e6
                    for p in pools
                    if p["user"] == user
                ),
                default=0.0,
            ),
        )
        for user in sorted(own_pools)
    }
    waits = [_int(p, "maxwait") + _int(p, "maxwait_us") / 1e6 for p in pools]
    return Sample(
        at=time.monotonic() if at is None else at,
        client_active=sum(_int(p, "cl_active") for p in pools),
        client_waiting=sum(_int(p, "cl_waiting") for p in pools),
        server_active=sum(_int(p, "sv_active") for p in pools),
        server_idle=sum(_int(p, "sv_idle") for p in pools),
        server_connections=sum(
            _int(p, key)
            for p in pools
            for key in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
        ),
        max_wait_s=max(waits, default=0.0),
        # used_clients counts this console connection too.
        client_connections=max(lists.get("used_clients", 0) - 1, 0),
        client_capacity=int(config.get("max_client_conn", 0) or 0),
        xact_total=sum(_int(s, "total_xact_count") for s in stats),
        wait_total_us=sum(_int(s, "total_wait_time") for s in stats),
        processes=1,
        users=users,
    )


def _own_pool(user: Mapping[str, Any]) -> bool:
    """A role with its own `[users]` pool_size (SHOW USERS leaves the column empty otherwise)."""
    try:
        return int(str(user.get("pool_size") or "0")) > 0
    except ValueError:
        return False


def combine(samples: Sequence[Sample]) -> Sample:
    """Sum the processes' figures (the oldest wait is the maximum)."""
    return Sample(
        at=max((s.at for s in samples), default=time.monotonic()),
        client_active=sum(s.client_active for s in samples),
        client_waiting=sum(s.client_waiting for s in samples),
        server_active=sum(s.server_active for s in samples),
        server_idle=sum(s.server_idle for s in samples),
        server_connections=sum(s.server_connections for s in samples),
        max_wait_s=max((s.max_wait_s for s in samples), default=0.0),
        client_connections=sum(s.client_connections for s in samples),
        client_capacity=sum(s.client_capacity for s in samples),
        xact_total=sum(s.xact_total for s in samples),
        wait_total_us=sum(s.wait_total_us for s in samples),
        processes=sum(s.processes for s in samples),
        users={
            user: (
                sum(s.users[user][0] for s in samples if user in s.users),
                max(s.users[user][1] for s in samples if user in s.users),
            )
            for user in sorted({u for s in samples for u in s.users})
        },
    )


def values(current: Sample, previous: Sample | None) -> dict[str, float]:
    """Metric name -> value; the rates need a previous sample (and are 0 without one)."""
    tps = 0.0
    avg_wait_ms = 0.0
    if previous is not None and current.at > previous.at:
        xacts = current.xact_total - previous.xact_total
        waited_us = current.wait_total_us - previous.wait_total_us
        # A restarted process resets its counters: a negative delta is not a rate.
        if xacts >= 0 and waited_us >= 0:
            tps = xacts / (current.at - previous.at)
            avg_wait_ms = waited_us / 1000 / xacts if xacts else 0.0
    capacity_pct = (
        100.0 * current.client_connections / current.client_capacity
        if current.client_capacity
        else 0.0
    )
    per_user: dict[str, float] = {}
    for user, (waiting, oldest) in current.users.items():
        per_user[metrics.per_user_key(metrics.CLIENT_WAITING, user)] = waiting
        per_user[metrics.per_user_key(metrics.MAX_WAIT, user)] = oldest
    return per_user | {
        metrics.CLIENT_ACTIVE.name: current.client_active,
        metrics.CLIENT_WAITING.name: current.client_waiting,
        metrics.SERVER_ACTIVE.name: current.server_active,
        metrics.SERVER_IDLE.name: current.server_idle,
        metrics.SERVER_CONNECTIONS.name: current.server_connections,
        metrics.MAX_WAIT.name: current.max_wait_s,
        metrics.CLIENT_CONNECTIONS.name: current.client_connections,
        metrics.CLIENT_CAPACITY.name: current.client_capacity,
        metrics.CLIENT_CAPACITY_PERCENT.name: round(capacity_pct, 3),
        metrics.AVG_WAIT.name: round(avg_wait_ms, 3),
        metrics.TRANSACTIONS_PER_SECOND.name: round(tps, 3),
        # Only reached when every process answered its admin console.
        metrics.HEARTBEAT.name: 1.0,
    }


@dataclass(frozen=True)
class ExporterSettings:
    """Where to poll and where to publish."""

    admin_conninfos: tuple[str, ...]
    namespace: str = metrics.NAMESPACE
    dimensions: Mapping[str, str] = field(default_factory=dict)
    interval_s: float = 60.0
    # Only this database's pools; None: every pool but the admin console's.
    database: str | None = None
    # The certificate file the task serves to clients: its days left are published too.
    certificate_file: str | None = None

    def __post_init__(self) -> None:
        if not self.admin_conninfos:
            raise ValueError("admin_conninfos: give at least one admin console to poll")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s {self.interval_s} must be positive")
        # One more for a workload's per-user datapoints (DIMENSION_USER).
        if len(self.dimensions) > 29:
            raise ValueError(
                "dimensions: CloudWatch allows at most 30 per metric, and the per-workload "
                f"metrics add {metrics.DIMENSION_USER!r}: give at most 29"
            )


UNITS = {m.name: m.unit for m in metrics.ALL}


class Exporter:
    """Collects a sample per interval and publishes it with `put_metric_data`."""

    def __init__(self, settings: ExporterSettings, cloudwatch: Any) -> None:
        self.settings = settings
        self.cloudwatch = cloudwatch
        self._previous: Sample | None = None
        self.published: list[dict[str, float]] = []

    def collect(self) -> dict[str, float]:
        """Poll every process and derive the metric values (rates against the last poll)."""
        now = time.monotonic()
        sample = combine(
            [
                poll_process(c, database=self.settings.database, at=now)
                for c in self.settings.admin_conninfos
            ]
        )
        result = values(sample, self._previous)
        self._previous = sample
        if self.settings.certificate_file:
            try:
                days = certificate.days_left(self.settings.certificate_file)
            except (OSError, certificate.CertificateError) as exc:
                log.warning("cannot read the served certificate's expiry: %s", exc)
            else:
                result[metrics.CERTIFICATE_DAYS_LEFT.name] = round(days, 3)
        return result

    def publish(
        self, figures: Mapping[str, float], *, timestamp: dt.datetime | None = None
    ) -> None:
        dimensions = [{"Name": k, "Value": v} for k, v in sorted(self.settings.dimensions.items())]
        when = timestamp or dt.datetime.now(dt.UTC)
        resolution = 1 if self.settings.interval_s < 60 else 60
        datums = []
        for key, value in figures.items():
            name, _, user = key.partition(metrics.USER_SEPARATOR)
            datums.append(
                {
                    "MetricName": name,
                    "Dimensions": dimensions
                    + ([{"Name": metrics.DIMENSION_USER, "Value": user}] if user else []),
                    "Timestamp": when,
                    "Value": float(value),
                    "Unit": UNITS[name],
                    "StorageResolution": resolution,
                }
            )
        for start in range(0, len(datums), MAX_DATUMS_PER_CALL):
            self.cloudwatch.put_metric_data(
                Namespace=self.settings.namespace,
                MetricData=datums[start : start + MAX_DATUMS_PER_CALL],
            )
        self.published.append(dict(figures))

    def tick(self) -> dict[str, float] | None:
        """One poll and publish; a failure is logged, never fatal (the next tick retries)."""
        try:
            figures = self.collect()
        except psycopg.Error as exc:
            log.warning("polling the admin console failed: %s", exc)
            self._previous = None
            return None
        try:
            self.publish(figures)
        except Exception as exc:
            log.warning("put_metric_data failed: %s", exc)
        return figures

    def run(self, stop: threading.Event) -> None:
        """Tick every interval until `stop` is set."""
        while not stop.is_set():
            started = time.monotonic()
            self.tick()
            stop.wait(max(self.settings.interval_s - (time.monotonic() - started), 0.0))


def parse_dimensions(text: str) -> dict[str, str]:
    """`"Stack=dev,Service=pooler"` -> a dict; an entry without `=` is refused by name."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"dimension {item!r} is not NAME=VALUE")
        result[name.strip()] = value.strip()
    return result
