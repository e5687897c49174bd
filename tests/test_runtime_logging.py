"""Two overlapping invocations on two instances of one function each log as their own instance.

The real health handler runs in the local runtime with its database behind a port that accepts
and never answers, so each invocation spends seconds logging connect retries while the other
runs: the lines of each must carry its own request id and say both were cold starts, and each
instance must count its own cold start in its metrics.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from slotguard.local.runtime import FunctionSpec
from slotguard.local.state import KIT_ROOT
from tests.fixtures_functions import REGION, LocalAws

pytestmark = pytest.mark.integration


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose connections are accepted by the kernel and never answered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def health_spec(
    local_aws: LocalAws, port: int, module: str = "health", event: bytes = b"{}"
) -> FunctionSpec:
    secret_arn = local_aws.put_secret(
        {"username": "app_user", "password": "unused", "engine": "postgres", "dbname": "app"}
    )
    return FunctionSpec(
        name=module,
        handler=f"functions.{module}.handler",
        code_dir=KIT_ROOT,
        timeout_s=20,
        environment={
            "AWS_ENDPOINT_URL": local_aws.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(port),
            "DB_NAME": "app",
            "DB_AUTH": "secret",
            "DB_SECRET_ARN": secret_arn,
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": "/etc/ssl/certs/ca-certificates.crt",
            "DB_CONNECT_TIMEOUT_S": "2",
            "DB_IDLE_DISCARD_S": "60",
            "DB_RETRY_BUDGET_S": "4",
            "DB_RETRIES": "on",
            "HEALTH_ALARM_PERCENT": "80",
            "POWERTOOLS_SERVICE_NAME": f"slotguard-{module}",
        },
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


# health is the kit's handler; stock is the example "written the way a team writes its own",
# which must follow the same advice (docs/local.md) and log its own request id.
EVENTS = {"health": b"{}", "stock": b'{"item_id": 1, "change": -1}'}


@pytest.mark.parametrize(
    "module", [m for m in sorted(EVENTS) if (KIT_ROOT / "functions" / f"{m}.py").exists()]
)
def test_overlapping_invocations_log_their_own_request_id_and_cold_start(
    runtime_factory, client_for, local_aws, black_hole, module
):
    runtime = runtime_factory([health_spec(local_aws, black_hole, module)], region=REGION)
    client = client_for(runtime, pool=2)

    def invoke(_index: int) -> dict[str, Any]:
        return client.invoke(FunctionName=module, Payload=EVENTS[module], LogType="Tail")  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(invoke, range(2)))
    stats = runtime.stats()[module]
    assert (stats.cold_starts, stats.instances) == (2, 2)  # two instances, both new
    request_ids = set()
    for response in responses:
        request_id = response["ResponseMetadata"]["RequestId"]
        request_ids.add(request_id)
        log = base64.b64decode(response["LogResult"]).decode()
        logged = [line for line in json_lines(log) if "level" in line]
        # Its connect retries and the failed check, logged while the other instance ran.
        assert logged, log
        assert {line["function_request_id"] for line in logged} == {request_id}, log
        assert {line["cold_start"] for line in logged} == {True}, log
        assert {line["service"] for line in logged} == {f"slotguard-{module}"}
        # This instance's own metrics: one cold start, in this invocation's EMF document.
        emf = [line for line in json_lines(log) if "_aws" in line]
        assert len(emf) == 1, log
        assert emf[0].get("ColdStart") == [1.0] or emf[0].get("ColdStart") == 1.0, emf
    assert len(request_ids) == 2


def test_no_function_uses_the_process_wide_context_decorator() -> None:
    # docs/local.md: powertools' inject_lambda_context logs another instance's request id here.
    for path in sorted((KIT_ROOT / "functions").glob("*.py")):
        assert not re.search(r"@\w+\.inject_lambda_context", path.read_text()), path.name
