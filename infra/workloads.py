"""Workloads: groups of functions with their own role, timeouts and share of the pooler (pure).

A stack mixes a fast API with slow reports or batch jobs. With one application role there is one
`statement_timeout` (the API's, which cuts a report short) and one pool (which a burst of slow
reports fills, so the API waits). A workload gives a group of functions its own login role, with
its own timeouts set on the role, and, because PgBouncer's pools are per (database, user), its
own pool: `pool_share_percent` of each process's pool, rendered as the role's `pool_size` in
PgBouncer's `[users]` section. The default workload is `app_user` with today's settings and the
rest of the pool, so a stack without `workloads` renders exactly as before.

Connection limits: a workload's role gets `CONNECTION LIMIT` = what the pooler may hold for it at
its peak (peak processes x (its pool + the reserve pool)); `app_user` gets the pooler ceiling less
the other workloads' pools at the peak, which still covers its own pool and the reserve because
the pooler's peak fits the ceiling.

RDS Proxy has one connection pool per target group (`MaxConnectionsPercent` and the borrow queue
are per target group, not per secret): workloads still get their own roles, timeouts and
`CONNECTION LIMIT` (a hard cap at the database, answered with a login error rather than a
queue), but not a pool of their own; the budget says so in a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.settings import StackSettings

DEFAULT_WORKLOAD = "default"


@dataclass(frozen=True)
class WorkloadBudget:
    """One non-default workload: its role, its timeouts and its share of the pooler."""

    name: str
    role: str
    share_percent: int
    # Per PgBouncer process: the role's `pool_size` and `max_user_connections` ([users]); None
    # with RDS Proxy, which has no per-user pool.
    pool_size: int | None
    max_user_connections: int | None
    connection_limit: int
    statement_timeout_ms: int
    idle_in_transaction_session_timeout_ms: int
    lock_timeout_ms: int
    # PgBouncer's per-user `idle_transaction_timeout`: a backstop behind the role's own timeout.
    idle_transaction_timeout_s: int
    functions: tuple[str, ...]


def workload_of(settings: StackSettings, function: str) -> str:
    """The workload a function belongs to (`default` unless it names one)."""
    return settings.functions[function].workload or DEFAULT_WORKLOAD


def role_name(settings: StackSettings, workload: str) -> str:
    """The login role of a workload: `app_user` for the default one."""
    ws = settings.workloads.get(workload)
    if ws is None:
        return settings.app_user.name
    return ws.role or f"{settings.app_user.name}_{workload}"


def statement_timeout(settings: StackSettings, function: str) -> tuple[int, str]:
    """The function's role's `statement_timeout` in ms and the setting that sets it."""
    workload = workload_of(settings, function)
    ws = settings.workloads.get(workload)
    if ws is None:
        return settings.app_user.statement_timeout_ms, "app_user.statement_timeout_ms"
    return ws.statement_timeout_ms, f"workloads.{workload}.statement_timeout_ms"


def longest_idle_in_transaction_s(settings: StackSettings) -> int:
    """The longest idle-in-transaction timeout of any role the functions log in as, seconds."""
    values = [settings.app_user.idle_in_transaction_session_timeout_ms] + [
        w.idle_in_transaction_session_timeout_ms for w in settings.workloads.values()
    ]
    return math.ceil(max(values) / 1000)


@dataclass(frozen=True)
class PoolShape:
    """What the split needs from the pooler: per-process pool, reserve, processes at peak."""

    kind: str
    pool_size: int  # per process (PgBouncer) or the proxy's connections (RDS Proxy)
    reserve_pool: int
    peak_processes: int


def compute_workloads(
    settings: StackSettings,
    shape: PoolShape,
    ceiling: int,
    out: list[tuple[str, str]],
    warnings: list[str],
) -> tuple[dict[str, WorkloadBudget], int]:
    """The non-default workloads and `app_user`'s connection limit.

    Broken invariants go to `out` as (setting, arithmetic); the budget turns them into
    violations.
    """
    _check_names(settings, out)
    if not settings.workloads:
        return {}, max(ceiling, 1)
    return _split(settings, shape, ceiling, out, warnings)


def _check_names(settings: StackSettings, out: list[tuple[str, str]]) -> None:
    """Functions name existing workloads; workload roles are distinct from every other role."""
    for name, fn in sorted(settings.functions.items()):
        if fn.workload is not None and fn.workload not in settings.workloads:
            known = ", ".join(sorted(settings.workloads)) or "none defined"
            out.append(
                (
                    f"functions.{name}.workload",
                    f"workload {fn.workload!r} is not in `workloads` ({known}); add it or "
                    "remove the key for the default workload",
                )
            )
    if DEFAULT_WORKLOAD in settings.workloads:
        out.append(
            (
                f"workloads.{DEFAULT_WORKLOAD}",
                f"`{DEFAULT_WORKLOAD}` is the workload of `app_user` (set its timeouts under "
                "app_user); give this workload another name",
            )
        )
    roles: dict[str, str] = {
        settings.app_user.name: "app_user.name",
        settings.app_user.migration_role: "app_user.migration_role",
    }
    for name in sorted(settings.workloads):
        role = role_name(settings, name)
        if role in roles:
            out.append(
                (
                    f"workloads.{name}.role",
                    f"role {role!r} is already {roles[role]}'s; every workload needs a role of "
                    "its own (PgBouncer pools and role settings are per role)",
                )
            )
        roles[role] = f"workloads.{name}"


def _split(
    settings: StackSettings,
    shape: PoolShape,
    ceiling: int,
    out: list[tuple[str, str]],
    warnings: list[str],
) -> tuple[dict[str, WorkloadBudget], int]:
    """Each workload's pool and limit, and what is left for app_user."""
    shares = {name: w.pool_share_percent for name, w in sorted(settings.workloads.items())}
    total_share = sum(shares.values())
    parts = " + ".join(f"{name} {share}" for name, share in shares.items())
    if total_share >= 100:
        out.append(
            (
                "workloads",
                f"pool shares {parts} = {total_share}% leave the default workload "
                f"({settings.app_user.name}) {100 - total_share}%; the shares must add up to "
                "less than 100 so app_user keeps at least one connection",
            )
        )
    result: dict[str, WorkloadBudget] = {}
    taken_at_peak = 0
    pooled = shape.kind == "pgbouncer"
    for name, ws in sorted(settings.workloads.items()):
        members = tuple(sorted(f for f, fs in settings.functions.items() if fs.workload == name))
        if not members:
            warnings.append(
                f"workloads.{name}: no function names it (functions.<name>.workload); its role "
                "and pool share are created but unused"
            )
        if pooled:
            pool = shape.pool_size * ws.pool_share_percent // 100
            if pool < 1:
                out.append(
                    (
                        f"workloads.{name}.pool_share_percent",
                        f"{ws.pool_share_percent}% of the pool of {shape.pool_size} per PgBouncer "
                        f"process = {shape.pool_size * ws.pool_share_percent / 100:g}, less than "
                        "one connection; raise the share or the pool (database.max_connections, "
                        "fewer tasks or processes)",
                    )
                )
                pool = 1
            user_max = pool + shape.reserve_pool
            limit = shape.peak_processes * user_max
            taken_at_peak += shape.peak_processes * pool
        else:
            pool, user_max = None, None
            limit = max(1, shape.pool_size * ws.pool_share_percent // 100)
            taken_at_peak += limit
        result[name] = WorkloadBudget(
            name=name,
            role=role_name(settings, name),
            share_percent=ws.pool_share_percent,
            pool_size=pool,
            max_user_connections=user_max,
            connection_limit=limit,
            statement_timeout_ms=ws.statement_timeout_ms,
            idle_in_transaction_session_timeout_ms=ws.idle_in_transaction_session_timeout_ms,
            lock_timeout_ms=ws.lock_timeout_ms,
            idle_transaction_timeout_s=math.ceil(ws.idle_in_transaction_session_timeout_ms / 1000)
            + 5,
            functions=members,
        )
    if pooled:
        others = sum(w.pool_size or 0 for w in result.values())
        rest = shape.pool_size - others
        if rest < 1 and total_share < 100:
            pools = " + ".join(f"{w.name} {w.pool_size}" for w in result.values())
            out.append(
                (
                    "workloads",
                    f"the workloads' pools {pools} = {others} take the whole pool of "
                    f"{shape.pool_size} per PgBouncer process and leave the default workload "
                    f"({settings.app_user.name}) {rest}; lower their pool_share_percent or "
                    "raise the pool",
                )
            )
    else:
        warnings.append(
            "workloads: RDS Proxy has one connection pool per target group "
            "(MaxConnectionsPercent and the borrow queue are shared by every secret), so "
            "workloads get their own roles, timeouts and CONNECTION LIMIT but not a pool of "
            "their own: a workload at its limit gets login errors, and a slow one can still "
            "make the others wait for a borrowed connection; use pooler.kind pgbouncer for "
            "isolated pools"
        )
    default_limit = max(ceiling - taken_at_peak, 1)
    return result, default_limit
