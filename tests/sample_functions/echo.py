"""Returns what it sees: the event, its environment, its context and its instance's state."""

from __future__ import annotations

import os
from typing import Any

from . import state


def handler(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("say"):
        print(f"saying {event['say']}")
    return {
        "event": event,
        "sample_value": os.environ.get("SAMPLE_VALUE"),
        "function_name": context.function_name,
        "env_function_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "token": state.TOKEN,
        "count": state.count(),
        "module": __name__,
    }
