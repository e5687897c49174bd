"""Side invocations a drill fires next to its write storm (slow queries, bursts), timed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slotguard.drills.storm import invoke


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    status: int | None
    cause: str | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def probe_event(query_ms: int) -> dict[str, Any]:
    return {"query_ms": query_ms}


def burst(client: Any, function_name: str, event: dict[str, Any], count: int) -> list[Call]:
    """`count` simultaneous invocations of one event, each timed and classified."""

    def one(_index: int) -> Call:
        start = time.time()
        status, cause = invoke(client, function_name, event)
        return Call(start, time.time(), status, cause)

    with ThreadPoolExecutor(count, thread_name_prefix="drill-burst") as pool:
        return list(pool.map(one, range(count)))
