"""The exporter publishes each workload pool's waiting clients and oldest wait (real PgBouncer).

A role with its own `[users]` pool_size (a workload) gets `ClientWaiting` and `MaxWaitSeconds`
once more with the `User` dimension; a role on the default pool gets none, so a stack without
workloads publishes what it published before.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from infra.budget import compute_budget
from infra.settings import load_stack
from pgbouncer import metrics
from pgbouncer.config import UserPool
from pgbouncer.exporter import Exporter, ExporterSettings
from slotguard.aws.verify import Verify, alarm_metrics
from slotguard.local.monitor import DatabaseObserver, StackSampler
from slotguard.local.ports import free_port
from slotguard.local.runtime import RuntimeAdminClient

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=15)]

NAMESPACE = "SlotguardTest/Workloads"
DIMENSIONS = {"Stack": "test", "Service": "pooler"}


@pytest.fixture(scope="module")
def cloudwatch():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield boto3.client(
        "cloudwatch",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    server.stop()


def _hold(conninfo: str, seconds: float, started: threading.Event) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        started.set()
        conn.execute("SELECT pg_sleep(%s)", (seconds,))


def test_a_saturated_workload_pool_is_published_under_its_own_user(
    postgres_factory, pgbouncer_factory, cloudwatch
):
    server = postgres_factory(max_connections=30)
    passwords = {"fast": secrets.token_urlsafe(12), "slow": secrets.token_urlsafe(12)}
    bouncer = pgbouncer_factory(
        server,
        users=passwords,
        pool_size=2,
        max_db_connections=3,
        query_wait_timeout_s=20,
        user_pools=(UserPool("slow", pool_size=1, max_user_connections=1),),
    )
    exporter = Exporter(
        ExporterSettings(
            admin_conninfos=tuple(bouncer.admin_conninfos(user="pgbouncer_stats")),
            namespace=NAMESPACE,
            dimensions=DIMENSIONS,
            interval_s=0.1,
        ),
        cloudwatch,
    )
    # `fast` has a pool too (the default one) once it has connected: it must not be published.
    with psycopg.connect(bouncer.conninfo("fast", passwords["fast"]), autocommit=True) as conn:
        conn.execute("SELECT 1")
    idle = exporter.tick()
    assert idle is not None
    assert idle[metrics.per_user_key(metrics.CLIENT_WAITING, "slow")] == 0
    assert metrics.per_user_key(metrics.CLIENT_WAITING, "fast") not in idle

    slow = bouncer.conninfo("slow", passwords["slow"])
    threads = []
    for _ in range(3):  # a pool of one: one query runs, two wait
        started = threading.Event()
        thread = threading.Thread(target=_hold, args=(slow, 3.0, started), daemon=True)
        thread.start()
        started.wait(10)
        threads.append(thread)
    deadline = time.monotonic() + 5
    figures = exporter.tick()
    while (
        figures is None or figures[metrics.per_user_key(metrics.CLIENT_WAITING, "slow")] < 2
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
        figures = exporter.tick()
    # The local target's sampler reads the same per-role figures for the alarm evaluator (no
    # runtime here: its function counts are left out of the sample).
    db = DatabaseObserver(server.conninfo())
    try:
        local = StackSampler(
            db,
            bouncer.admin_conninfos(user="pgbouncer_stats"),
            RuntimeAdminClient(f"http://127.0.0.1:{free_port()}", timeout_s=1),
        )()
    finally:
        db.close()
    for thread in threads:
        thread.join(15)
    assert local["pooler_waiting_clients:slow"] == 2
    assert local["pooler_oldest_wait_s:slow"] > 0
    assert "pooler_waiting_clients:fast" not in local
    assert figures is not None
    assert figures[metrics.per_user_key(metrics.CLIENT_WAITING, "slow")] == 2
    assert figures[metrics.per_user_key(metrics.MAX_WAIT, "slow")] > 0
    # The stack-wide figure still sums every pool.
    assert figures[metrics.CLIENT_WAITING.name] >= 2

    listed = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=metrics.CLIENT_WAITING.name)
    users = {
        d["Value"]
        for m in listed["Metrics"]
        for d in m["Dimensions"]
        if d["Name"] == metrics.DIMENSION_USER
    }
    assert users == {"slow"}
    stats = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=metrics.CLIENT_WAITING.name,
        Dimensions=[
            *({"Name": k, "Value": v} for k, v in sorted(DIMENSIONS.items())),
            {"Name": metrics.DIMENSION_USER, "Value": "slow"},
        ],
        StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )
    assert max(p["Maximum"] for p in stats["Datapoints"]) == 2

    # `slotguard verify` proves a workload alarm's metric has datapoints the way it does for
    # every alarm: ListMetrics with the alarm's exact dimensions, `User` included.
    dims = [
        *({"Name": k, "Value": v} for k, v in sorted(DIMENSIONS.items())),
        {"Name": metrics.DIMENSION_USER, "Value": "slow"},
    ]
    cloudwatch.put_metric_alarm(
        AlarmName="test-pooler-waiting-clients-slow",
        Namespace=NAMESPACE,
        MetricName=metrics.CLIENT_WAITING.name,
        Dimensions=dims,
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=["test-pooler-waiting-clients-slow"])[
        "MetricAlarms"
    ]
    settings = load_stack("workloads")
    verify = Verify(settings, compute_budget(settings), {}, lambda _: cloudwatch, None)
    (watched,) = alarm_metrics(alarm)
    assert verify._has_data(cloudwatch, watched)
    unpublished = {**watched, "Dimensions": [*dims[:-1], {"Name": "User", "Value": "fast"}]}
    assert not verify._has_data(cloudwatch, unpublished)
