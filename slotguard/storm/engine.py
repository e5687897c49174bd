"""Fire a burst of concurrent invocations at one wiring and record what each one met.

Threads, not asyncio: boto3 is synchronous, and a storm is about many callers *waiting* at once,
which threads model directly; the client's connection pool is sized to the concurrency and its
retries are off, so every throttle and failure is seen and counted rather than retried away.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from slotguard.storm.classify import Cause, Outcome, classify_error
from slotguard.storm.results import InvocationRecord, Limits, StormReport, WiringResult
from slotguard.storm.sampler import Observer, Sampler

Payloads = Callable[[int], Any]
Alarms = Sequence[str] | Callable[[], Sequence[str]]
_DETAIL_CHARS = 400


@dataclass(frozen=True)
class Wiring:
    """One way of reaching the database: a function behind a Lambda client (local or AWS)."""

    name: str
    function_name: str
    client: Any  # a boto3 Lambda client, see `slotguard.storm.client.lambda_client`
    payload: Payloads = lambda _index: {}


def invoke_once(client: Any, function_name: str, payload: Any) -> tuple[Outcome, str | None, str]:
    """One synchronous invocation, classified: (outcome, cause, detail)."""
    try:
        response = client.invoke(
            FunctionName=function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(payload).encode(),
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "TooManyRequestsException":
            return Outcome.THROTTLED, None, str(exc.response.get("Reason", ""))
        return Outcome.FAILED, Cause.OTHER.value, f"{code}: {exc}"[:_DETAIL_CHARS]
    except BotoCoreError as exc:
        return Outcome.FAILED, Cause.OTHER.value, f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS]
    body = response["Payload"].read().decode(errors="replace")
    if response.get("FunctionError"):
        return Outcome.FAILED, classify_error(body).value, body[:_DETAIL_CHARS]
    if _is_error_response(body):
        # An API handler that caught the error and answered 5xx (as it should) still failed.
        return Outcome.FAILED, classify_error(body).value, body[:_DETAIL_CHARS]
    return Outcome.OK, None, ""


def _is_error_response(body: str) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    status = document.get("statusCode") if isinstance(document, dict) else None
    return isinstance(status, int) and status >= 500


def run_burst(
    wiring: Wiring,
    burst: int,
    *,
    concurrency: int | None = None,
    observer: Observer | None = None,
    limits: Limits | None = None,
    sample_interval_s: float = 0.1,
    alarms: Alarms = (),
    progress: Progress | None = None,
) -> WiringResult:
    """Fire `burst` invocations, at most `concurrency` at a time (default: all at once).

    All callers are started before any fires, then released together, so the burst really is
    simultaneous rather than ramped by thread start-up.
    """
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst}")
    workers = min(burst, concurrency or burst)
    if workers < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    records: list[InvocationRecord | None] = [None] * burst
    counts = {Outcome.OK: 0, Outcome.FAILED: 0, Outcome.THROTTLED: 0}
    lock = threading.Lock()
    go = threading.Event()
    task = (
        progress.add_task(_describe(wiring.name, counts), total=burst)
        if progress is not None
        else None
    )
    origin = 0.0

    def call(index: int) -> None:
        go.wait()
        payload = wiring.payload(index)
        start = time.perf_counter() - origin
        outcome, cause, detail = invoke_once(wiring.client, wiring.function_name, payload)
        end = time.perf_counter() - origin
        records[index] = InvocationRecord(index, start, end, outcome, cause, detail)
        with lock:
            counts[outcome] += 1
            description = _describe(wiring.name, counts)
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=description)

    sampler = Sampler(observer, sample_interval_s) if observer is not None else None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="storm") as pool:
        futures = [pool.submit(call, index) for index in range(burst)]
        origin = time.perf_counter()
        if sampler is not None:
            sampler.start(origin)
        go.set()
        for future in futures:
            future.result()
        duration = time.perf_counter() - origin
    samples = sampler.stop() if sampler is not None else []
    fired = list(alarms() if callable(alarms) else alarms)
    return WiringResult(
        wiring=wiring.name,
        function_name=wiring.function_name,
        records=[record for record in records if record is not None],
        samples=samples,
        limits=limits,
        duration_s=duration,
        alarms_fired=fired,
        sampler_errors=sampler.errors if sampler is not None else [],
    )


def run_storm(
    wirings: Iterable[Wiring],
    burst: int,
    *,
    concurrency: int | None = None,
    observer: Observer | None = None,
    limits: Limits | None = None,
    sample_interval_s: float = 0.1,
    alarms: Callable[[Wiring], Sequence[str]] | None = None,
    before_each: Callable[[Wiring], None] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> StormReport:
    """Burst each wiring in turn (never at once: they would share the database) with one bar each.

    `before_each` runs before a wiring's burst (e.g. freeze instances, let connections drain);
    `alarms(wiring)` is asked after it for the alarms that fired during that burst. A wiring
    whose `before_each` fails is not burst and is named in the report's `skipped` with why.
    """
    wiring_list = list(wirings)
    names = [w.name for w in wiring_list]
    if len(set(names)) != len(names):
        raise ValueError(f"wiring names must be unique, got {names}")
    results: list[WiringResult] = []
    skipped: dict[str, str] = {}
    progress = _progress(console) if show_progress else None
    if progress is not None:
        progress.start()
    try:
        for wiring in wiring_list:
            if before_each is not None:
                try:
                    before_each(wiring)
                except Exception as exc:  # the report of the other wirings must still be made
                    skipped[wiring.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                    continue
            results.append(
                run_burst(
                    wiring,
                    burst,
                    concurrency=concurrency,
                    observer=observer,
                    limits=limits,
                    sample_interval_s=sample_interval_s,
                    alarms=_alarms_for(alarms, wiring),
                    progress=progress,
                )
            )
    finally:
        if progress is not None:
            progress.stop()
    run_settings = {"burst": burst, "concurrency": concurrency or burst, **(settings or {})}
    return StormReport(wirings=results, settings=run_settings, skipped=skipped)


def _alarms_for(alarms: Callable[[Wiring], Sequence[str]] | None, wiring: Wiring) -> Alarms:
    if alarms is None:
        return ()
    return lambda: alarms(wiring)


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=8,
    )


def _describe(name: str, counts: dict[Outcome, int]) -> str:
    return (
        f"{name:<10} [green]ok {counts[Outcome.OK]}[/] "
        f"[red]failed {counts[Outcome.FAILED]}[/] "
        f"[yellow]throttled {counts[Outcome.THROTTLED]}[/]"
    )
