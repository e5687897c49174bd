"""The local alarm evaluator: the stack's alarm rules on live metrics, every second.

CloudWatch evaluates the same rules on the deployed stack (see `infra/alarm_rules.py`). Locally a
period is one second, so a rehearsal's short burst still shows which alarms would fire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from infra.alarm_rules import AlarmRule

Sampler = Callable[[], Mapping[str, float]]


@dataclass
class AlarmState:
    """Where one alarm stands now."""

    key: str
    state: str = "OK"
    value: float | None = None
    threshold: float = 0
    breaching_periods: int = 0
    times_fired: int = 0
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Transition:
    """An alarm changing state, as logged."""

    at: float
    key: str
    old: str
    new: str
    value: float
    threshold: float
    description: str


class AlarmEvaluator:
    """Evaluate rules on samples; an alarm fires after `evaluation_periods` breaching samples."""

    def __init__(
        self,
        rules: list[AlarmRule],
        sampler: Sampler,
        *,
        evaluation_periods: int = 1,
        log_file: Path | None = None,
    ) -> None:
        self.rules = rules
        self.sampler = sampler
        self.evaluation_periods = evaluation_periods
        self.log_file = log_file
        self.states = {r.key: AlarmState(r.key, threshold=r.threshold) for r in rules}
        self.transitions: list[Transition] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def evaluate_once(self) -> list[Transition]:
        """Take one sample and update every alarm's state."""
        sample = self.sampler()
        changed: list[Transition] = []
        now = time.time()
        with self._lock:
            for rule in self.rules:
                if rule.sample_key not in sample:
                    continue
                value = float(sample[rule.sample_key])
                state = self.states[rule.key]
                state.value = value
                state.breaching_periods = state.breaching_periods + 1 if rule.breached(value) else 0
                new = "ALARM" if state.breaching_periods >= self.evaluation_periods else "OK"
                if new != state.state:
                    transition = Transition(
                        now, rule.key, state.state, new, value, rule.threshold, rule.description
                    )
                    changed.append(transition)
                    state.state, state.since = new, now
                    if new == "ALARM":
                        state.times_fired += 1
            self.transitions += changed
        if self.log_file is not None and changed:
            with self.log_file.open("a") as handle:
                for transition in changed:
                    handle.write(json.dumps(asdict(transition)) + "\n")
        return changed

    def fired(self) -> list[str]:
        """Keys of the alarms that have entered ALARM at least once."""
        with self._lock:
            return [key for key, s in self.states.items() if s.times_fired]

    def start(self, interval_s: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.evaluate_once()
                except psycopg.Error:
                    continue  # a restarting server is not an alarm evaluator failure

        self._thread = threading.Thread(target=loop, name="alarm-evaluator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
