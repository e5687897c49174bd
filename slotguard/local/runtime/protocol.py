"""Messages between the HTTP front and the per-function worker processes, and Lambda's shapes.

The front and a worker talk over a socket pair with `multiprocessing.connection` (pickled
messages, length-framed): each message is `(kind, request_number, body)`.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_RUNTIME_DIR = str(Path(__file__).resolve().parent)

INVOKE = "invoke"
FREEZE = "freeze"
STATS = "stats"
SHUTDOWN = "shutdown"
RESULT = "result"
READY = "ready"


@dataclass(frozen=True)
class Invocation:
    """One invocation sent to a worker: the raw JSON payload and whether to return the log."""

    payload: bytes
    log_tail: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a worker answers for one invocation: the body and whether it is a function error."""

    body: bytes
    function_error: bool
    request_id: str
    log: str = ""
    cold_start: bool = False
    instance_id: int = 0
    duration_ms: float = 0.0


@dataclass(frozen=True)
class FreezeRequest:
    count: int
    payload: bytes
    # Cold-start `count` new instances rather than reusing idle ones first (a storm's warm-up
    # grows a fleet step by step without re-invoking the instances it already has).
    fresh: bool = False


@dataclass(frozen=True)
class FreezeOutcome:
    """Instances frozen on purpose: how many, and the errors of those that failed."""

    frozen: int
    failed: int
    errors: list[str] = field(default_factory=list)


@dataclass
class FunctionStats:
    """Counters and instance states of one function (see `InstancePool.stats`)."""

    busy: int = 0
    idle: int = 0
    frozen: int = 0
    timed_out_running: int = 0
    invocations: int = 0
    cold_starts: int = 0
    warm_starts: int = 0
    thaws: int = 0
    errors: int = 0
    timeouts: int = 0
    init_errors: int = 0
    reaped: int = 0
    sockets_cut: int = 0
    throttles: int = 0
    worker_pid: int | None = None
    worker_alive: bool = True
    worker_restarts: int = 0

    @property
    def instances(self) -> int:
        return self.busy + self.idle + self.frozen

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "instances": self.instances}


def error_body(exc: BaseException, request_id: str) -> bytes:
    """Lambda's Python runtime error document for an unhandled exception."""
    # Only the function's own frames, as Lambda shows them; the runtime's are noise to a reader.
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_RUNTIME_DIR)
    ]
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_list(frames),
        }
    ).encode()


def timeout_body(request_id: str, timeout_s: int) -> bytes:
    """What Lambda answers when the platform stops an invocation at its timeout."""
    return json.dumps(
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": (
                f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds"
            ),
        }
    ).encode()


def runtime_error_body(error_type: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"errorType": error_type, "errorMessage": message, "requestId": request_id}
    ).encode()
