"""Instances: one module copy each, warm reuse, cold starts, per-function environments, aging."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from slotguard.local.runtime import RuntimeAdminClient, RuntimeAdminError
from tests.fixtures_local import sample_spec


def _invoke(client: Any, name: str, payload: Any = None) -> Any:
    response = client.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_sequential_invocations_reuse_one_warm_instance(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("echo", "echo")])
    client = client_for(runtime)
    bodies = [_invoke(client, "echo") for _ in range(3)]
    assert len({body["token"] for body in bodies}) == 1
    assert [body["count"] for body in bodies] == [1, 2, 3]  # module state survives, per instance
    stats = runtime.stats()["echo"]
    assert (stats.cold_starts, stats.warm_starts, stats.invocations) == (1, 2, 3)
    assert stats.instances == 1


def test_concurrent_invocations_each_get_their_own_module_copy(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("slow", "slow")])
    client = client_for(runtime, pool=4)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: _invoke(client, "slow", {"sleep_s": 0.4}), range(4)))
    assert len({body["token"] for body in bodies}) == 4  # `from . import state`: four copies
    stats = runtime.stats()["slow"]
    assert stats.cold_starts == 4
    assert stats.instances == 4
    assert stats.busy == 0


def test_each_function_sees_only_its_own_environment(runtime_factory, client_for):
    runtime = runtime_factory(
        [
            sample_spec("red", "echo", environment={"SAMPLE_VALUE": "red"}),
            sample_spec("green", "echo", environment={"SAMPLE_VALUE": "green"}),
        ]
    )
    client = client_for(runtime, pool=8)
    names = ["red", "green"] * 10
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda name: _invoke(client, name), names))
    assert [body["sample_value"] for body in bodies] == names
    assert [body["env_function_name"] for body in bodies] == names
    assert "SAMPLE_VALUE" not in os.environ  # nothing leaked into the runtime's own process


def test_remaining_time_counts_down_during_the_invocation(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("slow", "slow", timeout_s=2)])
    body = _invoke(client_for(runtime), "slow", {"sleep_s": 0.3})
    assert 1900 <= body["before_ms"] <= 2000
    assert 250 <= body["before_ms"] - body["after_ms"] <= 600


def test_idle_instances_freeze_then_thaw_on_reuse(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("echo", "echo")], freeze_after_s=0.2, reap_after_s=60)
    client = client_for(runtime)
    first = _invoke(client, "echo")
    assert runtime.stats()["echo"].idle == 1
    _wait_for(lambda: runtime.stats()["echo"].frozen == 1)
    second = _invoke(client, "echo")
    assert second["token"] == first["token"]
    stats = runtime.stats()["echo"]
    assert (stats.thaws, stats.cold_starts) == (1, 1)


def test_idle_instances_are_reaped_and_the_next_call_is_a_cold_start(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("echo", "echo")], freeze_after_s=0.1, reap_after_s=0.5)
    client = client_for(runtime)
    first = _invoke(client, "echo")
    _wait_for(lambda: runtime.stats()["echo"].reaped == 1)
    assert runtime.stats()["echo"].instances == 0
    second = _invoke(client, "echo")
    assert second["token"] != first["token"]
    assert second["count"] == 1
    assert runtime.stats()["echo"].cold_starts == 2


def test_freeze_leaves_exactly_n_instances_frozen(runtime_factory, client_for):
    runtime = runtime_factory([sample_spec("echo", "echo")], freeze_after_s=60, reap_after_s=120)
    _invoke(client_for(runtime), "echo")  # one idle instance exists and is reused first
    outcome = runtime.freeze("echo", 5, {"say": "hold"})
    assert (outcome.frozen, outcome.failed) == (5, 0)
    stats = runtime.stats()["echo"]
    assert (stats.frozen, stats.idle, stats.busy) == (5, 0, 0)
    assert stats.cold_starts == 5  # four new ones plus the reused one


def test_freeze_over_http_and_its_limit(runtime_factory):
    runtime = runtime_factory([sample_spec("capped", "echo", reserved_concurrency=3)])
    admin = RuntimeAdminClient(runtime.endpoint_url)
    assert admin.freeze("capped", 3)["frozen"] == 3
    assert admin.stats()["capped"]["frozen"] == 3
    with pytest.raises(RuntimeAdminError, match="reserved concurrency is 3"):
        admin.freeze("capped", 4)
    with pytest.raises(RuntimeAdminError, match="HTTP 404"):
        admin.freeze("absent", 1)


def test_a_dead_worker_fails_its_invocation_and_the_next_one_starts_afresh(
    runtime_factory, client_for
):
    runtime = runtime_factory([sample_spec("slow", "slow", timeout_s=10)])
    client = client_for(runtime, pool=2)
    first = _invoke(client, "slow", {"sleep_s": 0})
    pid = runtime.stats()["slow"].worker_pid
    answers = []
    caller = threading.Thread(
        target=lambda: answers.append(client.invoke(FunctionName="slow", Payload=b'{"sleep_s": 5}'))
    )
    caller.start()
    _wait_for(lambda: runtime.stats()["slow"].busy == 1)
    os.kill(pid, signal.SIGKILL)
    caller.join(timeout=10)
    response = answers[0]
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Runtime.ExitError"
    second = _invoke(client, "slow", {"sleep_s": 0})
    assert second["token"] != first["token"]  # a fresh sandbox, nothing kept
    stats = runtime.stats()["slow"]
    assert stats.worker_restarts == 1
    assert stats.worker_pid != pid
    assert stats.cold_starts == 1
