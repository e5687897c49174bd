"""The storm's chart: database connections over time per wiring against the limits, and latency.

Drawn on a bare `Figure` saved through the Agg canvas: no pyplot global state and no display, so
it works on a server, in CI and from any thread.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from slotguard.storm.results import WiringResult


def write_chart(results: list[WiringResult], path: Path, title: str = "storm") -> Path:
    """Left: connections over time with max_connections and the ceiling; right: latency CDFs."""
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    conns, latency = fig.subplots(1, 2)
    fig.suptitle(title)
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    limits = next((r.limits for r in results if r.limits is not None), None)
    for color, result in zip(colors * 4, results, strict=False):
        if result.samples:
            conns.step(
                [s.t_s for s in result.samples],
                [s.db_connections for s in result.samples],
                where="post",
                color=color,
                label=result.wiring,
            )
        values = sorted(result.latencies_ms())
        if values:
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            latency.step(values, fractions, where="post", color=color, label=result.wiring)
    if limits is not None:
        conns.axhline(
            limits.max_connections,
            color="black",
            linestyle="--",
            label=f"max_connections {limits.max_connections}",
        )
        if limits.ceiling is not None:
            conns.axhline(
                limits.ceiling,
                color="tab:red",
                linestyle=":",
                label=f"pooler ceiling {limits.ceiling}",
            )
        conns.set_ylim(0, limits.max_connections * 1.15)
    conns.set_xlabel("seconds since the burst started")
    conns.set_ylabel("database connections")
    conns.set_title("database connections over time")
    conns.legend(loc="best")
    conns.grid(alpha=0.3)
    latency.set_xscale("log")
    latency.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    latency.xaxis.set_major_formatter(ScalarFormatter())
    latency.xaxis.set_minor_formatter(NullFormatter())
    latency.set_xlabel("latency (ms, log scale)")
    latency.set_ylabel("fraction of invocations")
    latency.set_title("latency distribution (throttles excluded)")
    latency.legend(loc="lower right")
    latency.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
