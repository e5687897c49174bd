"""A drill's figures: what the clients were told, what the database holds, what fired."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from slotguard.drills.reconcile import Reconciliation
from slotguard.drills.storm import Attempt, RequestLog


@dataclass(frozen=True)
class Check:
    """One target of a drill: met or not, with the figure that decides it."""

    name: str
    ok: bool
    detail: str


@dataclass
class Recovery:
    """From the fault to the first acknowledged write, and to steady state (no failure after)."""

    first_success_s: float | None
    steady_state_s: float | None


def recovery(attempts: list[Attempt], fault_at: float) -> Recovery:
    """First success that *started* after the fault; steady state after the last failure."""
    after = sorted((a for a in attempts if a.start >= fault_at), key=lambda a: a.start)
    first = next((a for a in after if a.ok), None)
    failures = [a for a in attempts if not a.ok and a.end >= fault_at]
    if first is None:
        return Recovery(None, None)
    if not failures:
        return Recovery(first.end - fault_at, first.end - fault_at)
    last_failure_start = max(a.start for a in failures)
    steady = next((a for a in after if a.ok and a.start > last_failure_start), None)
    return Recovery(first.end - fault_at, steady.end - fault_at if steady is not None else None)


@dataclass
class DrillResult:
    scenario: str
    description: str
    function_timeout_s: float
    started_at: float
    fault_at: float
    down_at: float | None  # restarts: when the part was down; recovery counts from here
    ended_at: float
    requests: int
    acknowledged: int
    rows_found: int
    lost: int
    duplicates: int
    mismatched: int
    rejected: int
    abandoned: int
    attempts: int
    retried_requests: int
    failed_attempts_by_cause: dict[str, int]
    abandoned_by_cause: dict[str, int]
    longest_attempt_s: float
    longest_request_s: float
    recovery: Recovery
    peak_db_connections: int | None
    db_connection_limit: int
    alarms: list[str]
    fault: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["passed"] = self.passed
        return document


def summarise(log: RequestLog, reconciled: Reconciliation) -> dict[str, Any]:
    """The storm's part of a result."""
    by_key: dict[str, list[Attempt]] = {}
    for attempt in log.attempts:
        by_key.setdefault(attempt.key, []).append(attempt)
    spans = [max(a.end for a in group) - min(a.start for a in group) for group in by_key.values()]
    return {
        "requests": len(by_key),
        "acknowledged": reconciled.acknowledged,
        "rows_found": reconciled.rows_found,
        "lost": len(reconciled.lost),
        "duplicates": len(reconciled.duplicates),
        "mismatched": len(reconciled.mismatched),
        "rejected": len(log.rejected),
        "abandoned": len(log.abandoned),
        "attempts": len(log.attempts),
        "retried_requests": sum(1 for group in by_key.values() if len(group) > 1),
        "failed_attempts_by_cause": dict(
            Counter(a.cause or "other" for a in log.attempts if not a.ok).most_common()
        ),
        "abandoned_by_cause": dict(Counter(log.abandoned.values()).most_common()),
        "longest_attempt_s": max((a.seconds for a in log.attempts), default=0.0),
        "longest_request_s": max(spans, default=0.0),
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _causes(causes: dict[str, int]) -> str:
    return ", ".join(f"{cause} {n}" for cause, n in causes.items()) or "none"


def drill_table(results: list[DrillResult]) -> Table:
    """One column per drill, one row per figure."""
    table = Table(title="fault drills", show_lines=False)
    table.add_column("")
    for result in results:
        table.add_column(result.scenario, overflow="fold")
    rows: list[tuple[str, list[str]]] = [
        ("requests (attempts)", [f"{r.requests} ({r.attempts})" for r in results]),
        ("acknowledged", [str(r.acknowledged) for r in results]),
        ("rows found", [str(r.rows_found) for r in results]),
        ("lost", [str(r.lost) for r in results]),
        ("duplicates", [str(r.duplicates) for r in results]),
        ("stored with another body", [str(r.mismatched) for r in results]),
        ("retried requests", [str(r.retried_requests) for r in results]),
        ("failed attempts", [_causes(r.failed_attempts_by_cause) for r in results]),
        ("failed requests", [_causes(r.abandoned_by_cause) for r in results]),
        (
            "longest attempt",
            [f"{r.longest_attempt_s:.2f} s (timeout {r.function_timeout_s:g})" for r in results],
        ),
        ("longest request", [_seconds(r.longest_request_s) for r in results]),
        ("fault -> first success", [_seconds(r.recovery.first_success_s) for r in results]),
        ("fault -> steady state", [_seconds(r.recovery.steady_state_s) for r in results]),
        (
            "peak db connections",
            [f"{r.peak_db_connections} / {r.db_connection_limit}" for r in results],
        ),
        ("alarms fired", [", ".join(r.alarms) or "none" for r in results]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    table.add_section()
    width = max((len(r.checks) for r in results), default=0)
    for index in range(width):
        cells = []
        for result in results:
            if index < len(result.checks):
                check = result.checks[index]
                mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
                cells.append(f"{mark} {escape(check.name)}: {escape(check.detail)}")
            else:
                cells.append("")
        table.add_row("target" if index == 0 else "", *cells)
    return table


def write_json(results: list[DrillResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"drills": [r.to_dict() for r in results]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
