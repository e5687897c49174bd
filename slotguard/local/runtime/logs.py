"""Per-invocation log capture inside one process that runs many instances at once.

Lambda returns the last 4 KB of an invocation's log when asked (`X-Amz-Log-Type: Tail`). Instances
here are threads of one worker process, so `sys.stdout`/`sys.stderr` are replaced by streams that
copy what a thread writes into that thread's capture buffer while it runs an invocation, and always
pass it on to the function's log. No library routes writes per thread, hence these small classes.
"""

from __future__ import annotations

import io
import threading
from typing import TextIO

TAIL_BYTES = 4096


class Capture:
    """One buffer per thread, open between `begin()` and `end()`."""

    def __init__(self) -> None:
        self._local = threading.local()

    def begin(self) -> None:
        self._local.buffer = io.StringIO()

    def end(self) -> str:
        buffer: io.StringIO | None = getattr(self._local, "buffer", None)
        self._local.buffer = None
        return buffer.getvalue() if buffer is not None else ""

    def add(self, text: str) -> None:
        buffer: io.StringIO | None = getattr(self._local, "buffer", None)
        if buffer is not None:
            buffer.write(text)


class RoutedStream(io.TextIOBase):
    """A text stream that tees each thread's writes into its capture and on to `target`."""

    def __init__(self, target: TextIO, capture: Capture) -> None:
        super().__init__()
        self._target = target
        self._capture = capture
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        self._capture.add(text)
        with self._lock:
            self._target.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._target.fileno()


def tail(text: str, limit: int = TAIL_BYTES) -> bytes:
    """The last `limit` bytes of a log, as Lambda's LogResult carries them."""
    return text.encode()[-limit:]
