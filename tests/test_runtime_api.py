"""The local runtime answers the Lambda Invoke API the way Lambda does, as boto3 sees it."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from botocore.exceptions import ClientError

from slotguard.local.runtime import LocalRuntime, RuntimeAdminClient
from tests.fixtures_local import sample_spec


@pytest.fixture(scope="module")
def runtime():
    # One runtime for the module (each test uses its own function or counts deltas): starting
    # worker processes is the slow part.
    with LocalRuntime(
        [
            sample_spec("echo", "echo", environment={"SAMPLE_VALUE": "blue"}, memory_mb=256),
            sample_spec("tail", "echo"),
            sample_spec("fail", "fail"),
            sample_spec("slow", "slow", timeout_s=1),
            sample_spec("broken", "broken"),
            sample_spec("narrow", "slow", timeout_s=5, reserved_concurrency=2),
        ]
    ) as served:
        yield served


def test_request_response_returns_the_payload_and_a_lambda_context(runtime, client_for):
    client = client_for(runtime)
    response = client.invoke(FunctionName="echo", Payload=json.dumps({"n": 7}))
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    body = json.loads(response["Payload"].read())
    assert body["event"] == {"n": 7}
    assert body["sample_value"] == "blue"
    assert body["function_name"] == body["env_function_name"] == "echo"
    assert body["memory"] == 256
    assert body["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert 2000 < body["remaining_ms"] <= 3000  # counts down from the 3 s default timeout


def test_a_full_arn_and_a_qualifier_name_the_same_function(runtime, client_for):
    client = client_for(runtime)
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST"
    body = json.loads(client.invoke(FunctionName=arn)["Payload"].read())
    assert body["function_name"] == "echo"
    assert body["event"] == {}


def test_log_tail_carries_the_invocations_own_output(runtime, client_for):
    client = client_for(runtime)
    response = client.invoke(FunctionName="tail", Payload=b'{"say": "tide"}', LogType="Tail")
    log = base64.b64decode(response["LogResult"]).decode()
    request_id = json.loads(response["Payload"].read())["request_id"]
    assert f"START RequestId: {request_id}" in log
    assert "saying tide" in log
    assert f"REPORT RequestId: {request_id}" in log
    assert "Init Duration" in log  # the first invocation was a cold start


def test_a_raising_handler_is_an_unhandled_function_error(runtime, client_for):
    response = client_for(runtime).invoke(FunctionName="fail", Payload=b'{"order": 42}')
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    body = json.loads(response["Payload"].read())
    assert body["errorType"] == "OrderRejectedError"
    assert body["errorMessage"] == "order 42 rejected"
    assert any("fail.py" in line and "_check" in line for line in body["stackTrace"])
    assert not any("slotguard/local/runtime" in line for line in body["stackTrace"])


def test_an_import_failure_is_a_function_error_and_is_retried_on_a_new_instance(
    runtime, client_for
):
    client = client_for(runtime)
    for _ in range(2):
        response = client.invoke(FunctionName="broken")
        assert response["FunctionError"] == "Unhandled"
        body = json.loads(response["Payload"].read())
        assert body["errorType"] == "Runtime.ImportModuleError"
        assert "does_not_exist" in body["errorMessage"]
    stats = runtime.stats()["broken"]
    assert stats.init_errors == 2
    assert stats.cold_starts == 2
    assert stats.instances == 0


def test_an_invocation_past_its_timeout_answers_task_timed_out(runtime, client_for):
    response = client_for(runtime).invoke(FunctionName="slow", Payload=b'{"sleep_s": 2.5}')
    assert response["FunctionError"] == "Unhandled"
    body = json.loads(response["Payload"].read())
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    stats = runtime.stats()["slow"]
    assert stats.timeouts == 1
    assert stats.timed_out_running == 1  # the handler still runs; its instance will be dropped


def test_unknown_function_is_resource_not_found(runtime, client_for):
    with pytest.raises(ClientError) as caught:
        client_for(runtime).invoke(FunctionName="nowhere")
    error = caught.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:nowhere" in error["Error"]["Message"]


def test_invalid_json_is_refused_with_a_reason(runtime, client_for):
    with pytest.raises(ClientError) as caught:
        client_for(runtime).invoke(FunctionName="echo", Payload=b"{not json")
    assert caught.value.response["Error"]["Code"] == "InvalidRequestContentException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_dry_run_and_event_invocation_types(runtime, client_for):
    client = client_for(runtime)
    assert client.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    before = runtime.stats()["echo"].invocations
    assert client.invoke(FunctionName="echo", InvocationType="Event")["StatusCode"] == 202
    deadline = threading.Event()
    for _ in range(50):
        if runtime.stats()["echo"].invocations > before:
            break
        deadline.wait(0.05)
    assert runtime.stats()["echo"].invocations == before + 1


def test_reserved_concurrency_exhausted_is_too_many_requests(runtime, client_for):
    client = client_for(runtime, pool=6)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            client.invoke(FunctionName="narrow", Payload=b'{"sleep_s": 0.6}')
            result = "ok"
        except client.exceptions.TooManyRequestsException as exc:
            assert exc.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            result = "throttled"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 2
    assert outcomes.count("throttled") == 4
    stats = runtime.stats()["narrow"]
    assert stats.throttles == 4
    assert stats.cold_starts == 2


def test_stats_endpoint_serves_json(runtime, client_for):
    before = runtime.stats()["echo"].invocations
    client_for(runtime).invoke(FunctionName="echo")
    stats = RuntimeAdminClient(runtime.endpoint_url).stats()
    assert set(stats) == {"echo", "tail", "fail", "slow", "broken", "narrow"}
    assert stats["echo"]["invocations"] == before + 1
    assert stats["echo"]["instances"] >= 1
