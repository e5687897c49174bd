"""Sleeps as asked and reports the remaining time before and after."""

from __future__ import annotations

import time
from typing import Any

from . import state


def handler(event: Any, context: Any) -> dict[str, Any]:
    before = context.get_remaining_time_in_millis()
    time.sleep(float(event.get("sleep_s", 0.2)))
    return {
        "before_ms": before,
        "after_ms": context.get_remaining_time_in_millis(),
        "token": state.TOKEN,
    }
