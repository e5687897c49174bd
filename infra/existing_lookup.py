"""`max_connections` of a database the team owns, read from its parameter groups.

The provider has no data source for parameter values, so this reads them with the RDS API
(`DescribeDBInstances`, `DescribeDBParameters`, `DescribeDBClusterParameters`), at preview
(infra/__main__.py), in `slotguard preflight` and in `slotguard verify`. A parameter group may
hold a number or RDS's formula (`LEAST({DBInstanceClassMemory/9531392},5000)`); a formula is
evaluated with the instance class's nominal memory from the kit's table, which is somewhat above
the `DBInstanceClassMemory` RDS uses, so `slotguard verify` also compares the live value
(`SHOW max_connections` through the health function).

The client is passed in (boto3's or a stubbed one); nothing here imports boto3.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from infra.budget import RDS_CLASS_MEMORY_GIB

# The variables RDS formulas may use that the kit can evaluate.
MEMORY_VARIABLE = "DBInstanceClassMemory"


class FormulaError(ValueError):
    """A parameter value the kit cannot evaluate."""


@dataclass(frozen=True)
class LiveMaxConnections:
    """The smallest `max_connections` over the database's instances, and how it was found."""

    value: int | None
    source: str


def class_memory_bytes(instance_class: str) -> int | None:
    gib = RDS_CLASS_MEMORY_GIB.get(instance_class)
    return None if gib is None else int(gib * 1024**3)


def evaluate(value: str, memory_bytes: int | None) -> int:
    """A parameter value as a number: `200`, or a formula such as
    `LEAST({DBInstanceClassMemory/9531392},5000)` (LEAST, GREATEST, + - * /)."""
    text = value.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if MEMORY_VARIABLE in text and memory_bytes is None:
        raise FormulaError(
            f"{value!r} depends on {MEMORY_VARIABLE}, and the instance class is not in the "
            "kit's memory table"
        )
    expression = (
        text.replace("{", "(")
        .replace("}", ")")
        .replace("LEAST", "min")
        .replace("GREATEST", "max")
        .replace(MEMORY_VARIABLE, str(memory_bytes))
    )
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise FormulaError(f"{value!r} is not a formula the kit can read") from None
    return math.floor(_eval(tree.body, value))


def _eval(node: ast.AST, original: str) -> float:  # noqa: PLR0911 - one case per node kind
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, original)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, original), _eval(node.right, original)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div | ast.FloorDiv) and right:
            return left / right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"min", "max"}
        and node.args
        and not node.keywords
    ):
        values = [_eval(arg, original) for arg in node.args]
        return min(values) if node.func.id == "min" else max(values)
    raise FormulaError(f"{original!r} uses something the kit cannot evaluate")


def _parameters(pages: Iterator[dict[str, Any]]) -> dict[str, str]:
    return {
        str(p["ParameterName"]): str(p["ParameterValue"])
        for page in pages
        for p in page.get("Parameters", [])
        if "ParameterValue" in p
    }


def instance_max_connections(rds: Any, identifier: str) -> tuple[int, str]:
    """One instance's `max_connections`: its DB parameter group's value, else its cluster's."""
    instance = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    memory = class_memory_bytes(str(instance.get("DBInstanceClass", "")))
    for group in instance.get("DBParameterGroups", []):
        name = group["DBParameterGroupName"]
        pages = rds.get_paginator("describe_db_parameters").paginate(DBParameterGroupName=name)
        value = _parameters(pages).get("max_connections")
        if value is not None:
            return evaluate(value, memory), f"{identifier}: parameter group {name} = {value}"
    cluster = instance.get("DBClusterIdentifier")
    if cluster:
        found = rds.describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
        name = found["DBClusterParameterGroup"]
        pages = rds.get_paginator("describe_db_cluster_parameters").paginate(
            DBClusterParameterGroupName=name
        )
        value = _parameters(pages).get("max_connections")
        if value is not None:
            return evaluate(
                value, memory
            ), f"{identifier}: cluster parameter group {name} = {value}"
    raise FormulaError(f"{identifier}: no parameter group of the instance sets max_connections")


def live_max_connections(rds: Any, instances: list[str]) -> LiveMaxConnections:
    """The smallest `max_connections` over `instances` (each instance has its own ceiling)."""
    found: list[tuple[int, str]] = []
    for identifier in instances:
        try:
            found.append(instance_max_connections(rds, identifier))
        except FormulaError as error:
            return LiveMaxConnections(None, str(error))
    if not found:
        return LiveMaxConnections(None, "no instance to read")
    value, source = min(found)
    return LiveMaxConnections(value, "; ".join(s for _, s in found) if len(found) > 1 else source)


def cluster_members(rds: Any, cluster: str) -> list[str]:
    found = rds.describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
    return sorted(m["DBInstanceIdentifier"] for m in found.get("DBClusterMembers", []))


def refusal(budgeted: int, live: LiveMaxConnections) -> str | None:
    """The arithmetic when the database gives fewer connections than the budget counts on."""
    if live.value is None:
        return (
            f"database.max_connections: cannot read the database's max_connections "
            f"({live.source}); check it yourself against the budget's {budgeted}"
        )
    if live.value < budgeted:
        return (
            f"database.max_connections: the budget counts on {budgeted} connections but the "
            f"database gives {live.value} ({live.source}); set database.max_connections to "
            f"{live.value} (the pooler's share shrinks with it) or raise the database's"
        )
    return None
