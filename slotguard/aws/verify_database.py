"""`slotguard verify` for Aurora and for a database the team owns: every instance's parameter
group, and the live `max_connections` against the budget.

An Aurora stack pins the budget's `max_connections` in the instance parameter group of every
instance, so each instance must say exactly that and be in sync. A database the team owns keeps
its own parameter group: it must give at least what the budget counts on. Either way the live
value (`SHOW max_connections`, reported by the health function) is compared too, since a
formula's value depends on memory the kit only estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from infra.budget import Budget
from infra.existing_lookup import LiveMaxConnections, live_max_connections, refusal
from slotguard.aws.checks import Check, failed, passed


def database_checks(
    budget: Budget,
    outputs: Mapping[str, Any],
    rds: Any,
    health: Callable[[], dict[str, Any]],
) -> Iterator[Check]:
    instances = sorted((outputs.get("database_instance_identifiers") or {}).values())
    wanted = budget.max_connections
    for identifier in instances:
        found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        groups = found.get("DBParameterGroups", [])
        pending = [g for g in groups if g.get("ParameterApplyStatus") != "in-sync"]
        text = ", ".join(f"{g['DBParameterGroupName']} {g['ParameterApplyStatus']}" for g in groups)
        if pending and budget.database_kind == "aurora":
            yield failed(
                f"parameter group in sync ({identifier})",
                text,
                f"reboot the instance: aws rds reboot-db-instance --db-instance-identifier "
                f"{identifier}",
            )
        else:
            yield passed(f"parameter group in sync ({identifier})", text or "-")
    live = live_max_connections(rds, instances)
    if budget.database_kind == "aurora":
        if live.value == wanted:
            yield passed("max_connections", f"{live.value} on every instance (the budget's)")
        else:
            yield failed(
                "max_connections",
                f"{live.source}; the budget {wanted}",
                "deploy the stack's parameter group (`pulumi up`), then reboot if pending",
            )
    else:
        problem = refusal(wanted, live)
        if problem is None:
            yield passed("max_connections", f"{live.value} >= the budget's {wanted}")
        else:
            yield failed("max_connections", problem.partition(": ")[2], "see the message")
    yield from _live(wanted, live, health)


def _live(
    wanted: int, configured: LiveMaxConnections, health: Callable[[], dict[str, Any]]
) -> Iterator[Check]:
    connections = (health().get("body") or {}).get("connections") or {}
    live = connections.get("max")
    if isinstance(live, int) and live >= wanted:
        yield passed("live max_connections", f"SHOW max_connections = {live} >= {wanted}")
    else:
        yield failed(
            "live max_connections",
            f"the database runs with max_connections {live} (parameter group: "
            f"{configured.value}), the budget counts on {wanted}",
            "reboot the database so it runs its parameter group's value, or set "
            "database.max_connections to the live value",
        )
