"""The runtime's side of one worker process: start it, send it work, count its concurrency.

Reserved concurrency is counted here, in the process that answers HTTP, so a throttle is decided
before any work is sent and the 429 is immediate, as Lambda's is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from slotguard.local.runtime.protocol import READY, RESULT, SHUTDOWN, FunctionStats
from slotguard.local.runtime.spec import FunctionSpec, RuntimeSettings

# Variables passed from the runtime's own environment; everything else a function sees is what
# its spec sets plus what Lambda itself sets, so local runs do not depend on the caller's shell.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
READY_TIMEOUT_S = 60.0


class WorkerGoneError(RuntimeError):
    """The worker process exited while work was outstanding."""


def lambda_environment(spec: FunctionSpec, settings: RuntimeSettings) -> dict[str, str]:
    """The environment a function sees: Lambda's reserved variables, then the spec's own."""
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{os.getpid()}",
            "AWS_REGION": settings.region,
            "AWS_DEFAULT_REGION": settings.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}."
            f"{sys.version_info.minor}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(spec.environment)
    return env


class WorkerHandle:
    """One function's worker process and the requests outstanding with it."""

    def __init__(self, spec: FunctionSpec, settings: RuntimeSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._numbers = itertools.count(1)
        self._in_flight = 0
        self._throttles = 0
        self._log: IO[bytes] | None = None
        self._restart_lock = threading.Lock()
        self.restarts = 0
        # Set by the reader when the current process's socket reached EOF: the process is gone
        # even while the kernel has not yet made it reapable (it closes a dying process's files
        # before its exit status exists), so `alive()` must not wait for `poll()` to say so.
        self._gone = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process; `wait_ready()` completes the start (spawn many, then wait)."""
        self.spec.check_code()
        ours, theirs = socket.socketpair()
        stdout: IO[bytes] | None = None
        if self.settings.log_dir is not None and self._log is None:
            self.settings.log_dir.mkdir(parents=True, exist_ok=True)
            self._log = (self.settings.log_dir / f"{self.spec.name}.log").open("ab")
        stdout = self._log
        self._process = subprocess.Popen(
            [sys.executable, "-m", "slotguard.local.runtime.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=lambda_environment(self.spec, self.settings),
            cwd=self.spec.code_dir,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._gone = threading.Event()
        self._conn = Connection(ours.detach())
        # Each process gets its own table of outstanding requests, so the reader of a dead
        # process fails only the requests that process had.
        self._pending = {}
        self._conn.send((self.spec.model_dump_json(), self.settings.model_dump_json()))

    def wait_ready(self) -> None:
        conn = self._conn
        assert conn is not None, "spawn() first"
        try:
            if not conn.poll(READY_TIMEOUT_S):
                raise EOFError
            kind, _, _ = conn.recv()
        except (EOFError, OSError) as exc:
            self.stop()
            raise WorkerGoneError(
                f"function {self.spec.name!r}: worker did not start"
                + (f"; see {log}" if (log := log_path(self.settings, self.spec.name)) else "")
            ) from exc
        if kind != READY:
            raise WorkerGoneError(f"function {self.spec.name!r}: unexpected {kind!r} at start")
        threading.Thread(
            target=self._read,
            args=(conn, self._pending, self._gone),
            name=f"worker-{self.spec.name}",
            daemon=True,
        ).start()

    def ensure_running(self) -> None:
        """Start a fresh process if the last one died (as Lambda starts fresh sandboxes)."""
        if self.alive():
            return
        with self._restart_lock:
            if self.alive():
                return
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._process is not None:  # a lazy worker's first start is no restart
                self.restarts += 1
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(READY_TIMEOUT_S)  # reap it: it is exiting
            self.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def alive(self) -> bool:
        return (
            self._process is not None and not self._gone.is_set() and self._process.poll() is None
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._process is None:
            return
        if self._conn is not None:
            try:
                with self._send_lock:
                    self._conn.send((SHUTDOWN, 0, None))
            except OSError:
                pass
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._process = None

    # -- concurrency ---------------------------------------------------------------------------

    def try_acquire(self, count: int = 1) -> bool:
        """Take `count` concurrency slots, or count a throttle and refuse."""
        with self._state_lock:
            limit = self.spec.reserved_concurrency
            if limit is not None and self._in_flight + count > limit:
                self._throttles += 1
                return False
            self._in_flight += count
            return True

    def release(self, count: int = 1) -> None:
        with self._state_lock:
            self._in_flight -= count

    @property
    def throttles(self) -> int:
        return self._throttles

    # -- requests ------------------------------------------------------------------------------

    def request(self, kind: str, body: Any) -> Future[Any]:
        """Send one message; the future resolves with the worker's answer."""
        future: Future[Any] = Future()
        number = next(self._numbers)
        conn, pending = self._conn, self._pending
        if conn is None or not self.alive():
            future.set_exception(
                WorkerGoneError(f"function {self.spec.name!r}: worker process is not running")
            )
            return future
        with self._state_lock:
            pending[number] = future
        try:
            with self._send_lock:
                conn.send((kind, number, body))
        except OSError as exc:
            with self._state_lock:
                pending.pop(number, None)
            future.set_exception(
                WorkerGoneError(f"function {self.spec.name!r}: worker unreachable: {exc}")
            )
        return future

    def stats(self, timeout_s: float = 10.0) -> FunctionStats:
        """The worker's counters; a dead worker reports only what this side knows."""
        try:
            stats: FunctionStats = self.request("stats", None).result(timeout_s)
        except (WorkerGoneError, FutureTimeoutError):
            stats = FunctionStats(worker_alive=False)
        stats.throttles = self._throttles
        stats.worker_restarts = self.restarts
        return stats

    def _read(
        self, conn: Connection, pending: dict[int, Future[Any]], gone: threading.Event
    ) -> None:
        while True:
            try:
                kind, number, body = conn.recv()
            except (EOFError, OSError):
                gone.set()
                self._fail(pending, f"function {self.spec.name!r}: worker process exited")
                return
            if kind != RESULT:
                continue
            with self._state_lock:
                future = pending.pop(number, None)
            if future is not None:
                future.set_result(body)

    def _fail(self, pending: dict[int, Future[Any]], message: str) -> None:
        with self._state_lock:
            futures = list(pending.values())
            pending.clear()
        for future in futures:
            if not future.done():
                future.set_exception(WorkerGoneError(message))


def log_path(settings: RuntimeSettings, name: str) -> Path | None:
    return settings.log_dir / f"{name}.log" if settings.log_dir is not None else None
