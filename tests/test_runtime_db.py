"""Instances and real database connections: kept per instance, held while frozen, cut on reap."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fixtures_local import app_role, client_backends, sample_spec

pytestmark = pytest.mark.integration


def _query(client: Any, name: str, sleep_s: float = 0.0) -> int:
    response = client.invoke(FunctionName=name, Payload=json.dumps({"sleep_s": sleep_s}))
    assert "FunctionError" not in response, response["Payload"].read()
    return int(json.loads(response["Payload"].read())["backend_pid"])


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_each_instance_keeps_its_own_connection(postgres, runtime_factory, client_for):
    env = app_role(postgres, "rt_keep")
    runtime = runtime_factory([sample_spec("keep", "query", environment=env)])
    client = client_for(runtime, pool=3)
    with ThreadPoolExecutor(3) as pool:
        pids = set(pool.map(lambda _: _query(client, "keep", 0.3), range(3)))
    assert len(pids) == 3
    assert {_query(client, "keep") for _ in range(5)} <= pids  # warm calls reuse kept ones
    assert client_backends(postgres, "keep") == 3


def test_frozen_instances_hold_connections_until_reaped_then_sockets_are_cut(
    postgres, runtime_factory
):
    env = app_role(postgres, "rt_frozen")
    runtime = runtime_factory(
        [sample_spec("frozen", "query", environment=env)], freeze_after_s=0.1, reap_after_s=1.5
    )
    worker_pid = runtime.stats()["frozen"].worker_pid
    baseline = _open_fds(worker_pid)
    outcome = runtime.freeze("frozen", 4, {"sleep_s": 0})
    assert (outcome.frozen, outcome.failed) == (4, 0)
    assert runtime.stats()["frozen"].frozen == 4
    assert client_backends(postgres, "frozen") == 4  # frozen, connections still open
    assert _open_fds(worker_pid) == baseline + 4

    deadline = time.monotonic() + 5
    while runtime.stats()["frozen"].reaped < 4:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    deadline = time.monotonic() + 10  # until the server has noticed the cut sockets
    while client_backends(postgres, "frozen") and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = runtime.stats()["frozen"]
    assert stats.sockets_cut == 4
    assert stats.instances == 0
    assert client_backends(postgres, "frozen") == 0
    assert _open_fds(worker_pid) == baseline  # no descriptor leaked per reaped instance
