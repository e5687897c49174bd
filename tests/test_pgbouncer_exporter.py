"""The exporter polls the live PgBouncer during a storm and publishes to CloudWatch (moto)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from pgbouncer import metrics
from pgbouncer.exporter import Exporter, ExporterSettings, Sample, parse_dimensions, values
from slotguard.local.ports import free_port

PASSWORD = "exporter-password"
DIMENSIONS = {"Stack": "test", "Service": "pooler"}


@pytest.fixture(scope="module")
def cloudwatch():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    client = boto3.client(
        "cloudwatch",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield client
    server.stop()


async def _storm(conninfo: str, clients: int) -> list[object]:
    async def one() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute("select pg_sleep(0.02)")

    return await asyncio.gather(*(one() for _ in range(clients)), return_exceptions=True)


@pytest.mark.integration
def test_exporter_publishes_waiting_clients_during_a_burst_and_none_after(
    postgres, pgbouncer_factory, cloudwatch
):
    bouncer = pgbouncer_factory(
        postgres,
        users={"exporter_app": PASSWORD},
        pool_size=4,
        query_wait_timeout_s=30,
        scram_iterations=64,
        # 400 TLS logins at once from one event loop, next to another test file on two cores,
        # have taken longer than libpq's 10 s here; the logins are not what this test is about.
        client_login_timeout_s=60,
    )
    exporter = Exporter(
        ExporterSettings(
            admin_conninfos=tuple(bouncer.admin_conninfos(user="pgbouncer_stats")),
            namespace="SlotguardTest/PgBouncer",
            dimensions=DIMENSIONS,
            interval_s=0.1,
        ),
        cloudwatch,
    )
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    stop = threading.Event()
    worker = threading.Thread(target=exporter.run, args=(stop,), daemon=True)
    worker.start()
    try:
        results = asyncio.run(
            _storm(bouncer.conninfo("exporter_app", PASSWORD, connect_timeout=60), 400)
        )
    finally:
        stop.set()
        worker.join()
    assert not [r for r in results if isinstance(r, BaseException)]
    during = list(exporter.published)
    time.sleep(0.2)
    after = exporter.tick()
    assert after is not None

    waiting = [p[metrics.CLIENT_WAITING.name] for p in during]
    assert max(waiting) > 0
    assert max(p[metrics.MAX_WAIT.name] for p in during) > 0
    assert max(p[metrics.SERVER_ACTIVE.name] for p in during) <= 4
    assert max(p[metrics.TRANSACTIONS_PER_SECOND.name] for p in during) > 0
    assert max(p[metrics.CLIENT_CAPACITY_PERCENT.name] for p in during) > 0
    assert after[metrics.CLIENT_WAITING.name] == 0
    assert after[metrics.CLIENT_ACTIVE.name] == 0
    assert after[metrics.CLIENT_CAPACITY.name] == 1000
    print(
        f"\nexporter: {len(during)} polls during the burst, max waiting {max(waiting)}, "
        f"max wait {max(p[metrics.MAX_WAIT.name] for p in during):.3f} s, "
        f"max tps {max(p[metrics.TRANSACTIONS_PER_SECOND.name] for p in during):.0f}"
    )

    listed = cloudwatch.list_metrics(Namespace="SlotguardTest/PgBouncer")["Metrics"]
    # CertificateDaysLeft needs the served certificate's file, which this exporter is not given.
    assert {m["MetricName"] for m in listed} == set(metrics.NAMES) - {
        metrics.CERTIFICATE_DAYS_LEFT.name
    }
    for m in listed:
        assert {d["Name"]: d["Value"] for d in m["Dimensions"]} == DIMENSIONS
    stats = cloudwatch.get_metric_statistics(
        Namespace="SlotguardTest/PgBouncer",
        MetricName=metrics.CLIENT_WAITING.name,
        Dimensions=[{"Name": k, "Value": v} for k, v in DIMENSIONS.items()],
        StartTime=started,
        EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum", "Minimum", "SampleCount"],
    )["Datapoints"]
    assert sum(p["SampleCount"] for p in stats) == len(during) + 1
    assert max(p["Maximum"] for p in stats) == max(waiting)
    assert min(p["Minimum"] for p in stats) == 0


def test_rates_come_from_counter_deltas():
    before = Sample(at=10.0, xact_total=100, wait_total_us=50_000)
    now = Sample(
        at=12.0, xact_total=300, wait_total_us=450_000, client_connections=50, client_capacity=200
    )
    figures = values(now, before)
    assert figures[metrics.TRANSACTIONS_PER_SECOND.name] == 100.0
    assert figures[metrics.AVG_WAIT.name] == 2.0  # 400 ms over 200 transactions
    assert figures[metrics.CLIENT_CAPACITY_PERCENT.name] == 25.0
    # A restarted process resets its counters: no negative rate.
    assert values(before, now)[metrics.TRANSACTIONS_PER_SECOND.name] == 0.0
    assert values(now, None)[metrics.TRANSACTIONS_PER_SECOND.name] == 0.0


def test_dimensions_are_parsed_or_refused_by_name():
    assert parse_dimensions("Stack=dev, Service=pooler") == {"Stack": "dev", "Service": "pooler"}
    with pytest.raises(ValueError, match="'Stack'"):
        parse_dimensions("Stack")
