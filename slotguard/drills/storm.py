"""The drills' write storm: creates through the Lambda API, retried with the same key.

Unlike `slotguard.storm` (which counts each invocation once, to show what a burst does), a drill
plays a *client*: every request carries a unique `Idempotency-Key`, and a failure or an unknown
outcome (a 5xx, a function error, a throttle, a dropped connection) is retried with the SAME key,
as a real client would, until it is acknowledged or the client gives up. What the client was told
is then reconciled against the database (`slotguard.drills.reconcile`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from slotguard.storm.classify import Cause, classify_error

# A client's own retry pacing: short, growing pauses, so a fault's end is seen within ~0.5 s.
RETRY_PAUSES_S = (0.05, 0.1, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class Attempt:
    """One invocation of one request (times are epoch seconds)."""

    key: str
    start: float
    end: float
    status: int | None  # the API's statusCode; None for a function error or no answer
    cause: str | None  # why it failed; None when acknowledged

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class RequestLog:
    """Every attempt of every request of one storm, thread-safe."""

    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # key -> final 2xx status
    rejected: dict[str, int] = field(default_factory=dict)  # key -> final 4xx status
    abandoned: dict[str, str] = field(default_factory=dict)  # key -> last failure cause
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def settle(self, key: str, last: Attempt) -> None:
        with self._lock:
            if last.ok:
                assert last.status is not None
                self.acknowledged[key] = last.status
            elif last.status is not None and 400 <= last.status < 500 and last.status != 429:
                self.rejected[key] = last.status
            else:
                self.abandoned[key] = last.cause or "other"

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return sorted({a.key for a in self.attempts})


def create_event(key: str, name: str, quantity: int) -> dict[str, Any]:
    """A Function URL (payload 2.0) `POST /items` with an `Idempotency-Key`."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/items",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "idempotency-key": key},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "drill",
            "domainName": "drill.local",
            "http": {
                "method": "POST",
                "path": "/items",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "slotguard-drill",
            },
            "requestId": key,
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": json.dumps({"name": name, "quantity": quantity}),
        "isBase64Encoded": False,
    }


def _failure_cause(body: str) -> str:
    """The storm's cause for an error body, refined by the helper's failure class if named."""
    cause = classify_error(body)
    if cause is not Cause.OTHER:
        return cause.value
    lowered = body.lower()
    for needle, name in (
        ("sessionterminated", "session terminated"),
        ("authentication", "authentication"),
        ("poolerrefusal", "pooler refusal"),
        ("cannotconnectnow", "database starting or stopping"),
        ("(connection)", "connection lost"),
        ("may or may not", "outcome unknown"),
        ("runtime.exiterror", "worker exited"),
    ):
        if needle in lowered.replace(" ", "") or needle in lowered:
            return name
    return Cause.OTHER.value


def invoke(  # noqa: PLR0911 - one return per kind of answer reads best here
    client: Any, function_name: str, event: dict[str, Any]
) -> tuple[int | None, str | None]:
    """One synchronous invocation: (statusCode or None, failure cause or None)."""
    try:
        response = client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "TooManyRequestsException":
            return 429, "throttled"
        return None, f"lambda {code or 'error'}"
    except BotoCoreError as exc:
        return None, f"no answer ({type(exc).__name__})"
    body = response["Payload"].read().decode(errors="replace")
    if response.get("FunctionError"):
        return None, _failure_cause(body)
    try:
        document = json.loads(body)
        status = int(document["statusCode"])
    except (ValueError, KeyError, TypeError):
        return None, "unreadable answer"
    if status >= 500:
        return status, _failure_cause(str(document.get("body", "")))
    if status >= 400:
        return status, f"rejected {status}"
    return status, None


@dataclass(frozen=True)
class StormPlan:
    """How hard a drill's storm writes: `concurrency` clients for `duration_s`, `think_s` apart."""

    concurrency: int = 12
    duration_s: float = 10.0
    think_s: float = 0.05
    give_up_s: float = 60.0  # a client stops retrying one request after this long

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency {self.concurrency} must be at least 1")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s {self.duration_s} must be positive")


class WriteStorm:
    """`concurrency` clients creating items back to back until `duration_s` has passed.

    Keys are `<run>-<client>-<n>`; the item's name is `drill-<key>`, so reconciliation can count
    rows by name as well as by key (a duplicate row would carry the same name under a broken
    idempotency store).
    """

    def __init__(
        self,
        client: Any,
        plan: StormPlan,
        *,
        function_name: str,
        run_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.plan = plan
        self.function_name = function_name
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.log = RequestLog()
        self._clock = clock
        self._stop_at = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self.started_at = 0.0
        self.ended_at = 0.0

    @property
    def name_prefix(self) -> str:
        return f"drill-{self.run_id}-"

    def start(self) -> WriteStorm:
        self.started_at = self._clock()
        self._stop_at = self.started_at + self.plan.duration_s
        self._pool = ThreadPoolExecutor(self.plan.concurrency, thread_name_prefix="drill-client")
        for index in range(self.plan.concurrency):
            self._pool.submit(self._client_loop, index)
        return self

    def stop_early(self) -> None:
        self._stop_at = min(self._stop_at, self._clock())

    def wait(self) -> RequestLog:
        assert self._pool is not None, "start() first"
        self._pool.shutdown(wait=True)
        self.ended_at = self._clock()
        return self.log

    def _client_loop(self, index: int) -> None:
        n = 0
        while self._clock() < self._stop_at:
            key = f"{self.run_id}-{index}-{n}"
            self.request(key, quantity=n % 100)
            n += 1
            time.sleep(self.plan.think_s)

    def request(self, key: str, quantity: int = 0, client: Any | None = None) -> Attempt:
        """Send one create until it is acknowledged, rejected, or the client gives up."""
        event = create_event(key, f"drill-{key}", quantity)
        first = self._clock()
        tries = 0
        while True:
            start = self._clock()
            status, cause = invoke(client or self.client, self.function_name, event)
            attempt = Attempt(key, start, self._clock(), status, cause)
            self.log.add(attempt)
            final = attempt.ok or (status is not None and 400 <= status < 500 and status != 429)
            if final or self._clock() - first > self.plan.give_up_s:
                self.log.settle(key, attempt)
                return attempt
            time.sleep(RETRY_PAUSES_S[min(tries, len(RETRY_PAUSES_S) - 1)])
            tries += 1
