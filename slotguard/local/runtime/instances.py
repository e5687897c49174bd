"""The instances of one function inside its worker process: cold starts, reuse, freeze, reap.

Each instance is a thread with its own copy of the function package (see `loader`), running one
invocation at a time like a Lambda sandbox. Idle instances are reused most recent first, turn
"frozen" after `freeze_after_s` (nothing of theirs runs, their connections stay open) and are
reaped after `reap_after_s`. An invocation that outlives its timeout is answered with Lambda's
timeout error at the deadline, and its instance is thrown away once the handler returns (a timed
out sandbox is reset on AWS, so its module state does not survive).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from slotguard.local.runtime.context import LambdaContext
from slotguard.local.runtime.loader import LoadedCode, discard, load_instance
from slotguard.local.runtime.logs import Capture
from slotguard.local.runtime.protocol import (
    FreezeOutcome,
    FunctionStats,
    Invocation,
    Outcome,
    error_body,
    runtime_error_body,
    timeout_body,
)
from slotguard.local.runtime.spec import FunctionSpec, RuntimeSettings

Reply = Callable[[Outcome], None]

BUSY, IDLE, FROZEN = "busy", "idle", "frozen"
HOUSEKEEPING_INTERVAL_S = 0.1


@dataclass(eq=False)
class _Job:
    invocation: Invocation
    reply: Reply
    freeze_after: bool = False
    request_id: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: bool = False

    def answer(self, outcome: Outcome) -> bool:
        """Send the outcome once: the handler and the timeout watchdog race for it."""
        with self.lock:
            if self.answered:
                return False
            self.answered = True
        self.reply(outcome)
        return True


@dataclass(eq=False)
class _Instance:
    number: int
    state: str = BUSY
    last_used: float = field(default_factory=time.monotonic)
    code: LoadedCode | None = None
    timed_out: bool = False
    jobs: queue.SimpleQueue[_Job | None] = field(default_factory=queue.SimpleQueue)


class InstancePool:
    """All instances of one function; thread-safe; `invoke` never blocks on the handler."""

    def __init__(self, spec: FunctionSpec, settings: RuntimeSettings, capture: Capture) -> None:
        self.spec = spec
        self.settings = settings
        self._capture = capture
        self._lock = threading.Lock()
        self._idle: list[_Instance] = []  # most recently used last
        self._all: set[_Instance] = set()
        self._next_number = 0
        self._stats = FunctionStats()
        self._deadlines: list[tuple[float, int, _Job, _Instance]] = []
        self._deadline_seq = 0
        self._deadline_cv = threading.Condition()
        self._closed = threading.Event()
        threading.Thread(target=self._watchdog, name="timeouts", daemon=True).start()
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()

    # -- dispatch ------------------------------------------------------------------------------

    def invoke(self, invocation: Invocation, reply: Reply) -> None:
        """Run one invocation on an idle instance, or on a new one (a cold start)."""
        instance = self._acquire(force_new=False)
        instance.jobs.put(_Job(invocation, reply))

    def freeze(self, count: int, payload: bytes, *, fresh: bool = False) -> FreezeOutcome:
        """Invoke `count` distinct instances at once, then freeze them all (blocking).

        Reuses idle instances first and cold-starts the rest, so exactly `count` instances end up
        frozen, each holding whatever its invocation left open (the storm's `--frozen N`).
        """
        instances = [self._acquire(force_new=fresh) for _ in range(count)]
        outcomes: list[Outcome] = []
        done = threading.Condition()

        def collect(outcome: Outcome) -> None:
            with done:
                outcomes.append(outcome)
                done.notify_all()

        for instance in instances:
            instance.jobs.put(_Job(Invocation(payload), collect, freeze_after=True))
        with done:
            done.wait_for(lambda: len(outcomes) == count)
        errors = [o.body.decode(errors="replace") for o in outcomes if o.function_error]
        return FreezeOutcome(frozen=count - len(errors), failed=len(errors), errors=errors[:5])

    def _acquire(self, *, force_new: bool) -> _Instance:
        with self._lock:
            self._stats.invocations += 1
            if self._idle and not force_new:
                instance = self._idle.pop()
                if instance.state == FROZEN:
                    self._stats.thaws += 1
                instance.state = BUSY
                self._stats.warm_starts += 1
                return instance
            self._next_number += 1
            instance = _Instance(self._next_number)
            self._all.add(instance)
            self._stats.cold_starts += 1
        threading.Thread(
            target=self._serve, args=(instance,), name=f"instance-{instance.number}", daemon=True
        ).start()
        return instance

    # -- one instance --------------------------------------------------------------------------

    def _serve(self, instance: _Instance) -> None:
        while (job := instance.jobs.get()) is not None:
            keep = self._run(instance, job)
            if not keep:
                break
        self._discard(instance)

    def _run(self, instance: _Instance, job: _Job) -> bool:
        """Run one job; returns whether the instance may be reused."""
        context = LambdaContext(
            function_name=self.spec.name,
            memory_limit_in_mb=self.spec.memory_mb,
            invoked_function_arn=self.settings.function_arn(self.spec.name),
            timeout_s=self.spec.timeout_s,
        )
        request_id = job.request_id = context.aws_request_id
        self._capture.begin()
        print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
        cold = instance.code is None
        init_ms = 0.0
        if instance.code is None:
            started = time.perf_counter()
            try:
                instance.code = load_instance(self.spec, instance.number)
            except BaseException as exc:
                init_ms = (time.perf_counter() - started) * 1000
                print(f"INIT_FAILED {type(exc).__name__}: {exc}", flush=True)
                body = runtime_error_body(
                    "Runtime.ImportModuleError"
                    if isinstance(exc, ImportError | AttributeError)
                    else type(exc).__name__,
                    f"Unable to import module '{self.spec.package}.{self.spec.module_path}': {exc}",
                    request_id,
                )
                with self._lock:
                    self._stats.init_errors += 1
                    self._stats.errors += 1
                self._finish(instance, job, body, error=True, cold=True, reuse=False, t0=started)
                return False
            init_ms = (time.perf_counter() - started) * 1000
        context.start_clock()
        self._watch(context.deadline, job, instance)
        started = time.perf_counter()
        error = False
        reuse = True
        try:
            text = job.invocation.payload.decode() or "{}"
            result = instance.code.handler(json.loads(text), context)
            body = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            if "JSON serializable" in str(exc):
                body = runtime_error_body("Runtime.MarshalError", str(exc), request_id)
            else:
                body = error_body(exc, request_id)
            error = True
        except (SystemExit, KeyboardInterrupt) as exc:
            body = runtime_error_body(
                "Runtime.ExitError", f"RequestId: {request_id} {exc!r}", request_id
            )
            error, reuse = True, False
        except Exception as exc:
            body = error_body(exc, request_id)
            error = True
        if error:
            print(body.decode(), flush=True)
            with self._lock:
                self._stats.errors += 1
        report = (
            f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\t"
            f"Duration: {(time.perf_counter() - started) * 1000:.2f} ms\t"
            f"Billed Duration: {math.ceil((time.perf_counter() - started) * 1000)} ms\t"
            f"Memory Size: {self.spec.memory_mb} MB"
            + (f"\tInit Duration: {init_ms:.2f} ms" if cold else "")
        )
        print(report, flush=True)
        return self._finish(instance, job, body, error=error, cold=cold, reuse=reuse, t0=started)

    def _finish(
        self,
        instance: _Instance,
        job: _Job,
        body: bytes,
        *,
        error: bool,
        cold: bool,
        reuse: bool,
        t0: float,
    ) -> bool:
        log = self._capture.end()
        outcome = Outcome(
            body=body,
            function_error=error,
            request_id=job.request_id,
            log=log if job.invocation.log_tail else "",
            cold_start=cold,
            instance_id=instance.number,
            duration_ms=(time.perf_counter() - t0) * 1000,
        )
        with self._lock:
            reuse = reuse and not instance.timed_out and not self._closed.is_set()
            if reuse:
                # Back in the pool *before* answering, so the caller's next invocation finds it.
                instance.state = FROZEN if job.freeze_after else IDLE
                instance.last_used = time.monotonic()
                self._idle.append(instance)
            else:
                # Out of the count *before* answering too: the caller may read the stats at once
                # (its code and sockets are released by `_discard` right after).
                self._all.discard(instance)
        job.answer(outcome)
        return reuse

    def _discard(self, instance: _Instance) -> None:
        cut = discard(instance.code) if instance.code is not None else 0
        instance.code = None
        with self._lock:
            self._all.discard(instance)
            self._stats.sockets_cut += cut

    # -- timeouts ------------------------------------------------------------------------------

    def _watch(self, deadline: float, job: _Job, instance: _Instance) -> None:
        with self._deadline_cv:
            self._deadline_seq += 1
            heapq.heappush(self._deadlines, (deadline, self._deadline_seq, job, instance))
            self._deadline_cv.notify()

    def _watchdog(self) -> None:
        # One thread for all deadlines (a timer thread per invocation would double the threads).
        while not self._closed.is_set():
            with self._deadline_cv:
                while self._deadlines and self._deadlines[0][2].answered:
                    heapq.heappop(self._deadlines)
                wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else 1.0
                if wait > 0:
                    self._deadline_cv.wait(timeout=min(wait, 1.0))
                    continue
                _, _, job, instance = heapq.heappop(self._deadlines)
            with self._lock:
                instance.timed_out = True
            if job.answer(
                Outcome(
                    body=timeout_body(job.request_id, self.spec.timeout_s),
                    function_error=True,
                    request_id=job.request_id,
                    instance_id=instance.number,
                    duration_ms=self.spec.timeout_s * 1000.0,
                )
            ):
                with self._lock:
                    self._stats.timeouts += 1
                    self._stats.errors += 1

    # -- freeze and reap -----------------------------------------------------------------------

    def _housekeeping(self) -> None:
        while not self._closed.wait(HOUSEKEEPING_INTERVAL_S):
            self.age(time.monotonic())

    def age(self, now: float) -> None:
        """Freeze instances idle for `freeze_after_s`, reap those idle for `reap_after_s`."""
        reaped: list[_Instance] = []
        with self._lock:
            keep: list[_Instance] = []
            for instance in self._idle:
                idle_for = now - instance.last_used
                if idle_for >= self.settings.reap_after_s:
                    reaped.append(instance)
                    continue
                if idle_for >= self.settings.freeze_after_s:
                    instance.state = FROZEN
                keep.append(instance)
            self._idle = keep
            self._all.difference_update(reaped)
            self._stats.reaped += len(reaped)
        for instance in reaped:
            instance.jobs.put(None)  # its own thread discards it

    # -- introspection and shutdown --------------------------------------------------------------

    def stats(self) -> FunctionStats:
        with self._lock:
            snapshot = dataclasses.replace(self._stats)
            snapshot.idle = sum(1 for i in self._idle if i.state == IDLE)
            snapshot.frozen = sum(1 for i in self._idle if i.state == FROZEN)
            idle_set = set(self._idle)
            running = [i for i in self._all if i not in idle_set]
            snapshot.timed_out_running = sum(1 for i in running if i.timed_out)
            snapshot.busy = len(running) - snapshot.timed_out_running
        return snapshot

    def close(self) -> None:
        """Stop aging and discard the idle instances (busy ones are left to the process exit)."""
        self._closed.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for instance in idle:
            instance.jobs.put(None)
