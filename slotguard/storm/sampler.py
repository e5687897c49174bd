"""Poll the database while a burst runs: connections (and pooler waiting clients) over time.

The observer is any callable returning a `DbSample`; the local target passes one reading
`pg_stat_activity` and PgBouncer's admin console, a deployed stack one reading CloudWatch or the
database through a bastion. Sampling runs on its own thread so a slow query never delays the burst.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DbSample:
    """What the observer sees at one instant."""

    db_connections: int
    waiting: int | None = None


@dataclass(frozen=True)
class TimedSample:
    t_s: float  # seconds since the burst started
    db_connections: int
    waiting: int | None = None


Observer = Callable[[], DbSample]


class Sampler:
    """Calls `observer` every `interval_s` between `start()` and `stop()`."""

    def __init__(self, observer: Observer, interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError(f"sample interval must be positive, got {interval_s}")
        self._observer = observer
        self._interval_s = interval_s
        self._samples: list[TimedSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._origin = 0.0
        self.errors: list[str] = []

    def start(self, origin: float | None = None) -> None:
        """Start sampling; times are measured from `origin` (a `time.perf_counter()` value)."""
        self._origin = time.perf_counter() if origin is None else origin
        self._thread = threading.Thread(target=self._run, name="storm-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[TimedSample]:
        """Stop, take one last sample, and return the series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return list(self._samples)

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            self._sample()
            next_at += self._interval_s
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def _sample(self) -> None:
        t_s = time.perf_counter() - self._origin
        try:
            sample = self._observer()
        except Exception as exc:
            if len(self.errors) < 10:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self._samples.append(TimedSample(t_s, sample.db_connections, sample.waiting))
