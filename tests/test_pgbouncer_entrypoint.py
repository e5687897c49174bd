"""The container entrypoint, run here with the ECS task's variables: a working pooler, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from pgbouncer import metrics
from slotguard.local.pgbouncer import install_role_verifiers
from slotguard.local.ports import free_port
from slotguard.local.system import service_user

pytestmark = pytest.mark.integration

APP_PASSWORD = "ecs-app-password"


@pytest.fixture
def moto_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def task_env(postgres, run_dir: Path, port: int, endpoint: str, verifier: str) -> dict[str, str]:
    """The variables the ECS task definition sets, secrets included (ECS injects them as env):
    of the role's secret only its `scram_verifier` key, so no password reaches the task."""
    user = service_user()
    env = {
        "PATH": os.environ["PATH"],
        "PGBOUNCER_DB_HOST": "127.0.0.1",
        "PGBOUNCER_DB_PORT": str(postgres.settings.port),
        "PGBOUNCER_DB_NAME": "postgres",
        "PGBOUNCER_DB_CA_FILE": str(postgres.tls.ca_cert),
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_LISTEN_PORT": str(port),
        "PGBOUNCER_PROCESSES": "1",
        "PGBOUNCER_DEFAULT_POOL_SIZE": "4",
        "PGBOUNCER_MAX_DB_CONNECTIONS": "4",
        "PGBOUNCER_DATABASE_SHARE": "8",
        "PGBOUNCER_MAX_CLIENT_CONN": "200",
        "PGBOUNCER_LISTEN_BACKLOG": "256",
        "PGBOUNCER_QUERY_WAIT_TIMEOUT_S": "5",
        "PGBOUNCER_CLIENT_IDLE_TIMEOUT_S": "60",
        "PGBOUNCER_USER_VERIFIER_ECS_APP": verifier,
        "PGBOUNCER_STATS_PASSWORD": "stats-password",
        "PGBOUNCER_CLIENT_TLS_CERT": postgres.tls.server_cert.read_text(),
        "PGBOUNCER_CLIENT_TLS_KEY": postgres.tls.server_key.read_text(),
        "PGBOUNCER_RUN_DIR": str(run_dir),
        "PGBOUNCER_DRAIN_TIMEOUT_S": "10",
        "PGBOUNCER_METRICS": "on",
        "PGBOUNCER_METRICS_INTERVAL_S": "0.5",
        "PGBOUNCER_METRICS_DIMENSIONS": "Stack=test,Service=pooler",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    if user is not None:  # the image runs as a non-root user; as root here, hand PgBouncer over
        env["PGBOUNCER_RUN_AS"] = user.name
    return env


def _connect(conninfo: str, deadline_s: float = 20.0) -> psycopg.Connection:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return psycopg.connect(conninfo)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_entrypoint_serves_and_drains_on_sigterm(postgres, scratch_dir, moto_endpoint):
    with postgres.connect_admin() as admin:
        verifier = install_role_verifiers(admin, {"ecs_app": APP_PASSWORD})["ecs_app"]
    port = free_port()
    run_dir = scratch_dir / "run"
    env = task_env(postgres, run_dir, port, moto_endpoint, verifier)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgbouncer.entrypoint"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=port,
        user="ecs_app",
        password=APP_PASSWORD,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(postgres.tls.ca_cert),
        connect_timeout=5,
    )
    try:
        with _connect(conninfo) as conn:
            assert conn.execute("select current_user").fetchone() == ("ecs_app",)
            assert conn.info.pgconn.ssl_in_use
        auth = run_dir / "userlist.txt"
        assert oct(auth.stat().st_mode & 0o777) == "0o600"
        assert APP_PASSWORD not in auth.read_text()
        assert "stats-password" not in auth.read_text()
        health = subprocess.run(
            [sys.executable, "-m", "pgbouncer.health"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        assert health.returncode == 0, health.stderr

        # SIGTERM while a transaction is open: it may still commit, then the pooler exits 0.
        inflight = psycopg.connect(conninfo)
        inflight.execute("create temporary table t (x int)")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still draining: the transaction holds its server
        inflight.execute("insert into t values (1)")
        inflight.commit()
        inflight.close()
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            for pidfile in run_dir.glob("*.pid"):  # do not leave an orphaned PgBouncer behind
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "safe shutdown" in out
    assert not list(run_dir.glob("*.pid")) or not any(
        Path(f"/proc/{p.read_text().strip()}").exists() for p in run_dir.glob("*.pid")
    )
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo)
    cloudwatch = boto3.client(
        "cloudwatch",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    names = {
        m["MetricName"] for m in cloudwatch.list_metrics(Namespace=metrics.NAMESPACE)["Metrics"]
    }
    assert names == set(metrics.NAMES)


def test_entrypoint_refuses_a_bad_variable_by_name(postgres, scratch_dir):
    env = task_env(postgres, scratch_dir / "run", free_port(), "http://127.0.0.1:9", "x")
    env["PGBOUNCER_DEFAULT_POOL_SIZE"] = "twenty"
    result = subprocess.run(
        [sys.executable, "-m", "pgbouncer.entrypoint", "--render-only"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "PGBOUNCER_DEFAULT_POOL_SIZE='twenty' is not an integer" in result.stderr


def test_entrypoint_refuses_numbers_over_the_database_share(postgres, scratch_dir):
    with postgres.connect_admin() as admin:
        verifier = install_role_verifiers(admin, {"ecs_app": APP_PASSWORD})["ecs_app"]
    env = task_env(postgres, scratch_dir / "run", free_port(), "http://127.0.0.1:9", verifier)
    env["PGBOUNCER_MAX_DB_CONNECTIONS"] = "12"
    env["PGBOUNCER_DEFAULT_POOL_SIZE"] = "10"
    result = subprocess.run(
        [sys.executable, "-m", "pgbouncer.entrypoint", "--render-only"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "processes 1 x max_db_connections 12 = 12 exceed the task's database share 8" in (
        result.stderr
    )


def test_a_drain_past_its_timeout_stops_pgbouncer_immediately(postgres, scratch_dir):
    with postgres.connect_admin() as admin:
        verifier = install_role_verifiers(admin, {"ecs_app": APP_PASSWORD})["ecs_app"]
    port = free_port()
    run_dir = scratch_dir / "run"
    env = task_env(postgres, run_dir, port, "http://127.0.0.1:9", verifier)
    env.update({"PGBOUNCER_METRICS": "off", "PGBOUNCER_DRAIN_TIMEOUT_S": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgbouncer.entrypoint"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    conninfo = psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=port,
        user="ecs_app",
        password=APP_PASSWORD,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(postgres.tls.ca_cert),
    )
    try:
        stuck = _connect(conninfo)
        stuck.execute("select 1")  # a transaction that never ends holds its server connection
        pids = [int(p.read_text()) for p in run_dir.glob("*.pid")]
        assert pids
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "drain timeout passed" in out
    assert 1.0 <= elapsed < 8.0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    stuck.close()
