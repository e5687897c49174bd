"""The context object a handler receives, with the attributes Lambda's Python runtime provides."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class LambdaContext:
    """Lambda's context: names, limits, and a remaining time that counts down from the timeout."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: object | None = None
    client_context: object | None = None
    deadline: float = 0.0  # time.monotonic() at which the platform stops the invocation

    def __post_init__(self) -> None:
        if not self.log_group_name:
            self.log_group_name = f"/aws/lambda/{self.function_name}"
        if not self.log_stream_name:
            self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]local"
        if not self.deadline:
            self.start_clock()

    def start_clock(self) -> None:
        """Start the countdown: called when the handler starts (init time is not counted)."""
        self.deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))
