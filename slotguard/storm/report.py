"""The storm's table: one column per wiring, so pooled and direct read side by side."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from slotguard.storm.classify import Cause
from slotguard.storm.results import WiringResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _peak(result: WiringResult) -> str:
    peak = result.peak_db_connections
    if peak is None:
        return "-"
    if result.limits is None:
        return str(peak)
    text = f"{peak} / {result.limits.max_connections}"
    if result.limits.ceiling is not None:
        text += f" (ceiling {result.limits.ceiling})"
    return text


def storm_table(results: list[WiringResult], title: str = "storm") -> Table:
    """Invocations, outcomes by cause, latency percentiles, database peaks and alarms."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for result in results:
        table.add_column(result.wiring, justify="right")
    causes = [c.value for c in Cause if any(c.value in r.failed for r in results)]
    rows: list[tuple[str, list[str]]] = [
        ("function", [escape(r.function_name) for r in results]),
        ("invocations", [f"{r.invocations:,}" for r in results]),
        ("succeeded", [f"[green]{r.succeeded:,}[/]" for r in results]),
        ("failed", [f"[red]{r.failed_total:,}[/]" if r.failed_total else "0" for r in results]),
        *[(f"  {cause}", [f"{r.failed.get(cause, 0):,}" for r in results]) for cause in causes],
        ("throttled", [f"{r.throttled:,}" for r in results]),
        ("p50 latency", [_ms(r.percentile_ms(50)) for r in results]),
        ("p95 latency", [_ms(r.percentile_ms(95)) for r in results]),
        ("p99 latency", [_ms(r.percentile_ms(99)) for r in results]),
        ("peak db connections", [_peak(r) for r in results]),
        (
            "peak waiting clients",
            ["-" if r.peak_waiting is None else str(r.peak_waiting) for r in results],
        ),
        (
            "time at connection limit",
            ["-" if r.time_at_limit_s is None else f"{r.time_at_limit_s:.1f} s" for r in results],
        ),
        ("alarms fired", [escape(", ".join(r.alarms_fired)) or "none" for r in results]),
        ("duration", [f"{r.duration_s:.1f} s" for r in results]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    return table
