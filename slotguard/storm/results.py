"""What a burst produced: one record per invocation, the database series, and the summary."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slotguard.storm.classify import Outcome
from slotguard.storm.sampler import TimedSample


@dataclass(frozen=True)
class Limits:
    """The database's size and the budget's pooler ceiling, to judge peaks against.

    `reserved` is `superuser_reserved_connections`: ordinary roles are refused at
    `max_connections - reserved`, so that is where "at the connection limit" starts.
    `admin_margin` is the budget's room for migrations and monitoring: a pooled run whose peak
    exceeds `ceiling + admin_margin` had something bypassing the pooler.
    """

    max_connections: int
    ceiling: int | None = None
    reserved: int = 0
    admin_margin: int = 0

    @property
    def connection_limit(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class InvocationRecord:
    index: int
    start_s: float  # since the burst started
    end_s: float
    outcome: Outcome
    cause: str | None = None
    detail: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.start_s) * 1000


@dataclass
class WiringResult:
    """The summary of one wiring's burst, with the raw records and samples behind it."""

    wiring: str
    function_name: str
    records: list[InvocationRecord]
    samples: list[TimedSample]
    limits: Limits | None
    duration_s: float
    alarms_fired: list[str] = field(default_factory=list)
    sampler_errors: list[str] = field(default_factory=list)

    @property
    def invocations(self) -> int:
        return len(self.records)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.records if r.outcome is Outcome.OK)

    @property
    def throttled(self) -> int:
        return sum(1 for r in self.records if r.outcome is Outcome.THROTTLED)

    @property
    def failed(self) -> dict[str, int]:
        """Failed invocations by cause (throttles are counted apart)."""
        causes = Counter(r.cause or "other" for r in self.records if r.outcome is Outcome.FAILED)
        return dict(causes.most_common())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def latencies_ms(self) -> list[float]:
        """Latencies of the invocations that ran (throttles return at once and would hide them)."""
        return [r.latency_ms for r in self.records if r.outcome is not Outcome.THROTTLED]

    def percentile_ms(self, percent: int) -> float | None:
        values = sorted(self.latencies_ms())
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]

    @property
    def peak_db_connections(self) -> int | None:
        return max((s.db_connections for s in self.samples), default=None)

    @property
    def peak_waiting(self) -> int | None:
        waiting = [s.waiting for s in self.samples if s.waiting is not None]
        return max(waiting, default=None)

    @property
    def within_ceiling(self) -> bool | None:
        """Whether the peak stayed within the pooler ceiling plus the admin margin."""
        peak = self.peak_db_connections
        if peak is None or self.limits is None or self.limits.ceiling is None:
            return None
        return peak <= self.limits.ceiling + self.limits.admin_margin

    @property
    def time_at_limit_s(self) -> float | None:
        """Seconds the database spent with every ordinary connection slot taken."""
        if self.limits is None or not self.samples:
            return None
        limit = self.limits.connection_limit
        total = 0.0
        for here, after in zip(self.samples, self.samples[1:], strict=False):
            if here.db_connections >= limit:
                total += after.t_s - here.t_s
        return total

    def summary(self) -> dict[str, Any]:
        return {
            "wiring": self.wiring,
            "function_name": self.function_name,
            "invocations": self.invocations,
            "succeeded": self.succeeded,
            "failed": self.failed_total,
            "failed_by_cause": self.failed,
            "throttled": self.throttled,
            "p50_ms": self.percentile_ms(50),
            "p95_ms": self.percentile_ms(95),
            "p99_ms": self.percentile_ms(99),
            "peak_db_connections": self.peak_db_connections,
            "max_connections": self.limits.max_connections if self.limits else None,
            "ceiling": self.limits.ceiling if self.limits else None,
            "connection_limit": self.limits.connection_limit if self.limits else None,
            "within_ceiling": self.within_ceiling,
            "peak_waiting": self.peak_waiting,
            "time_at_limit_s": self.time_at_limit_s,
            "alarms_fired": list(self.alarms_fired),
            "duration_s": self.duration_s,
            "sampler_errors": list(self.sampler_errors),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "samples": [asdict(s) for s in self.samples],
            "records": [
                {**asdict(r), "outcome": str(r.outcome), "latency_ms": r.latency_ms}
                for r in self.records
            ],
        }


@dataclass
class StormReport:
    """All wirings of one storm run, side by side, and the settings they ran with."""

    wirings: list[WiringResult]
    settings: dict[str, Any] = field(default_factory=dict)
    # Wirings that could not be prepared, by name, with why: the rest are still reported.
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "wirings": [w.to_dict() for w in self.wirings],
            "skipped": dict(self.skipped),
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path
