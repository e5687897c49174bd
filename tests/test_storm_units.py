"""Storm pieces that need no server: error classification, the sampler, the summary figures."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from slotguard.storm import (
    Cause,
    DbSample,
    InvocationRecord,
    Limits,
    Outcome,
    Sampler,
    TimedSample,
    WiringResult,
    classify_error,
)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        # PostgreSQL 15 and 16 wordings of the last ordinary slot being gone.
        (
            '{"errorMessage": "connection failed: FATAL:  remaining connection slots are reserved '
            'for non-replication superuser connections"}',
            Cause.TOO_MANY_CONNECTIONS,
        ),
        (
            "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
            Cause.TOO_MANY_CONNECTIONS,
        ),
        ("FATAL:  sorry, too many clients already", Cause.TOO_MANY_CONNECTIONS),
        ('FATAL:  too many connections for role "app_user"', Cause.TOO_MANY_CONNECTIONS),
        ("ERROR:  no more connections allowed (max_client_conn)", Cause.TOO_MANY_CONNECTIONS),
        ("ERROR:  query_wait_timeout", Cause.POOLER_QUEUE_WAIT),
        ("Timed-out waiting to acquire database connection", Cause.POOLER_QUEUE_WAIT),
        ("ERROR:  canceling statement due to statement timeout", Cause.STATEMENT_TIMEOUT),
        (
            'connection to server at "10.0.1.5", port 5432 failed: timeout expired',
            Cause.CONNECT_TIMEOUT,
        ),
        (
            '{"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: 1 Error: Task timed out '
            'after 3.00 seconds"}',
            Cause.FUNCTION_TIMEOUT,
        ),
        ('{"errorMessage": "division by zero", "errorType": "ZeroDivisionError"}', Cause.OTHER),
    ],
)
def test_errors_are_classified_by_their_real_wording(text, cause):
    assert classify_error(text) is cause


def _record(
    index: int, latency_s: float, outcome: Outcome = Outcome.OK, cause: str | None = None
) -> InvocationRecord:
    return InvocationRecord(index, 1.0, 1.0 + latency_s, outcome, cause)


def test_summary_counts_and_percentiles_exclude_throttles():
    records = [_record(i, (i + 1) / 100) for i in range(100)]  # 10 ms .. 1000 ms
    records += [_record(100 + i, 0.001, Outcome.THROTTLED) for i in range(50)]
    records += [_record(150, 2.0, Outcome.FAILED, "too many connections")]
    result = WiringResult("direct", "api", records, [], None, duration_s=3.0)
    assert (result.invocations, result.succeeded, result.throttled) == (151, 100, 50)
    assert result.failed == {"too many connections": 1}
    latencies = sorted(r.latency_ms for r in records if r.outcome is not Outcome.THROTTLED)
    assert result.percentile_ms(50) == pytest.approx(latencies[50])
    assert result.percentile_ms(99) == pytest.approx(latencies[99], rel=0.02)
    p99 = result.percentile_ms(99)
    assert p99 is not None
    assert p99 > 990  # throttles (1 ms) did not drag the tail down
    assert result.time_at_limit_s is None  # no limits, no samples


def test_time_at_limit_and_peaks_come_from_the_samples():
    samples = [
        TimedSample(0.0, 3, 0),
        TimedSample(0.1, 7, 4),
        TimedSample(0.3, 7, 9),
        TimedSample(0.4, 5, 2),
        TimedSample(0.6, 2, None),
    ]
    result = WiringResult("pooled", "api", [], samples, Limits(10, ceiling=5, reserved=3), 1.0)
    assert result.peak_db_connections == 7
    assert result.peak_waiting == 9
    assert result.time_at_limit_s == pytest.approx(0.3)  # 7 = 10 - 3 from 0.1 s to 0.4 s
    assert result.summary()["connection_limit"] == 7
    assert result.within_ceiling is False  # 7 > ceiling 5 + no admin margin
    with_margin = Limits(10, ceiling=5, reserved=3, admin_margin=2)
    assert WiringResult("pooled", "api", [], samples, with_margin, 1.0).within_ceiling is True


def test_sampler_polls_on_its_own_thread_and_records_errors():
    calls = []
    threads = set()

    def observe():
        calls.append(time.perf_counter())
        threads.add(threading.current_thread().name)
        if len(calls) == 3:
            raise ConnectionError("admin console unreachable")
        return DbSample(len(calls), waiting=0)

    sampler = Sampler(observe, interval_s=0.05)
    sampler.start()
    deadline = time.monotonic() + 10  # a loaded machine may run the sampler late, never less
    while len(calls) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = sampler.stop()
    assert len(calls) >= 6
    assert len(samples) == len(calls) - 1  # the failed poll left a gap, not a fake value
    assert sampler.errors == ["ConnectionError: admin console unreachable"]
    assert "storm-sampler" in threads
    # The failed poll neither stops the sampler nor backs it off: with 0.05 s polls, a gap of
    # a second would be one; a loaded machine delays a thread by tens of milliseconds, not that.
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) < 1.0, gaps


def test_bad_sampler_interval_is_refused():
    with pytest.raises(ValueError, match="sample interval must be positive"):
        Sampler(lambda: DbSample(0), interval_s=0)
