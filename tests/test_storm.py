"""Storms against real PostgreSQL through the local runtime: failures classified, peaks, outputs."""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable

import psycopg
import pytest
from rich.console import Console

from slotguard.local.postgres import LocalPostgres
from slotguard.storm import DbSample, Limits, Wiring, lambda_client, run_burst, run_storm
from slotguard.storm.chart import write_chart
from slotguard.storm.report import storm_table
from tests.fixtures_local import app_role, sample_spec

pytestmark = pytest.mark.integration


def observer_for(server: LocalPostgres) -> tuple[Callable[[], DbSample], psycopg.Connection]:
    """Client backends on `server` (the observer's own connection included: it takes a slot)."""
    conn = psycopg.connect(server.conninfo(), autocommit=True)

    def observe() -> DbSample:
        row = conn.execute(
            "select count(*) from pg_stat_activity where backend_type = 'client backend'"
        ).fetchone()
        assert row is not None
        return DbSample(db_connections=int(row[0]))

    return observe, conn


@pytest.fixture(scope="module")
def small_server(postgres_factory):
    return postgres_factory(max_connections=10, superuser_reserved_connections=3)


def test_an_unpooled_burst_runs_out_of_connection_slots(small_server, runtime_factory):
    env = app_role(small_server, "storm_direct")
    runtime = runtime_factory([sample_spec("direct", "query", environment=env, timeout_s=10)])
    observe, conn = observer_for(small_server)
    limits = Limits(max_connections=10, reserved=3)
    with conn:
        result = run_burst(
            Wiring(
                "direct",
                "direct",
                lambda_client(endpoint_url=runtime.endpoint_url, pool_size=50),
                lambda _i: {"sleep_s": 0.5},
            ),
            50,
            observer=observe,
            limits=limits,
            alarms=["db-connections-80"],
        )
    assert result.invocations == 50
    assert result.throttled == 0
    too_many = result.failed.get("too many connections", 0)
    assert too_many >= 40  # at most 7 slots for ordinary roles, one taken by the observer
    assert result.succeeded + result.failed_total == 50
    assert result.failed_total == too_many
    # A backend takes its process slot before PostgreSQL checks that enough are left free
    # (src/backend/utils/init/postinit.c: "the new backend has already claimed a proc struct"
    # when HaveNFreeProcs runs), so logins racing for the last ordinary slot can all be
    # refused, and on a busy machine no later login may come to take it: the burst fills the
    # ordinary slots or stops a few short, and never passes them.
    peak = result.peak_db_connections
    assert peak is not None
    assert limits.connection_limit - 3 <= peak <= limits.connection_limit
    assert result.time_at_limit_s is not None
    if peak == limits.connection_limit:
        assert result.time_at_limit_s > 0.3
    else:
        assert result.time_at_limit_s == 0
    assert result.alarms_fired == ["db-connections-80"]
    failed = [r for r in result.records if r.cause == "too many connections"]
    # PostgreSQL words a refusal one of two ways, depending on whether a free process slot was
    # left when the backend started; both are the outage the pooler prevents.
    assert re.search(
        r"remaining connection slots are reserved|sorry, too many clients already",
        failed[0].detail,
    )
    p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
    assert p50 is not None
    assert p99 is not None
    assert p50 <= p99
    assert p99 >= 500  # the successful ones held the connection for 0.5 s


def test_reserved_concurrency_throttles_are_counted_not_retried(postgres, runtime_factory):
    env = app_role(postgres, "storm_capped")
    runtime = runtime_factory(
        [sample_spec("capped", "query", environment=env, reserved_concurrency=5)]
    )
    client = lambda_client(endpoint_url=runtime.endpoint_url, pool_size=20)
    result = run_burst(Wiring("capped", "capped", client, lambda _i: {"sleep_s": 0.3}), 20)
    assert result.failed_total == 0
    assert result.throttled >= 10
    assert result.succeeded + result.throttled == 20
    assert runtime.stats()["capped"].throttles == result.throttled  # every 429 seen, no retry


def test_storm_report_writes_table_json_and_chart(small_server, runtime_factory, scratch_dir):
    env = app_role(small_server, "storm_side")
    runtime = runtime_factory(
        [
            sample_spec("naive", "query", environment=env, timeout_s=10),
            sample_spec("capped", "query", environment=env, reserved_concurrency=3),
        ],
        freeze_after_s=0.2,
        reap_after_s=0.5,  # instances of the first burst release their slots before the second
    )
    client = lambda_client(endpoint_url=runtime.endpoint_url, pool_size=30)
    observe, conn = observer_for(small_server)

    def drain(_wiring):
        import time

        deadline = time.monotonic() + 10
        while observe().db_connections > 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    out = io.StringIO()
    with conn:
        report = run_storm(
            [
                Wiring("direct", "naive", client, lambda _i: {"sleep_s": 0.3}),
                Wiring("capped", "capped", client, lambda _i: {"sleep_s": 0.3}),
            ],
            30,
            observer=observe,
            limits=Limits(max_connections=10, ceiling=5, reserved=3),
            before_each=drain,
            console=Console(file=out, width=120),
        )
    assert "direct" in out.getvalue()
    direct, capped = report.wirings
    assert direct.failed.get("too many connections", 0) > 0
    assert capped.failed_total == 0
    assert capped.throttled > 0
    assert capped.peak_db_connections is not None
    assert capped.peak_db_connections <= 3 + 1  # reserved concurrency 3, plus the observer

    table_text = io.StringIO()
    Console(file=table_text, width=160).print(storm_table(report.wirings))
    rendered = table_text.getvalue()
    for label in ("too many connections", "throttled", "p99 latency", "peak db connections"):
        assert label in rendered

    saved = json.loads(report.write_json(scratch_dir / "storm.json").read_text())
    assert [w["wiring"] for w in saved["wirings"]] == ["direct", "capped"]
    first = saved["wirings"][0]
    assert first["invocations"] == 30
    assert first["failed_by_cause"] == direct.failed
    assert len(first["records"]) == 30
    assert first["samples"]
    assert saved["settings"]["burst"] == 30

    png = write_chart(report.wirings, scratch_dir / "storm.png", title="direct vs capped")
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1430, 550)
