"""schemathesis against the api handler's OpenAPI description, through the local runtime.

The requests are real HTTP sent to the runtime's Function URL front
(`/urls/api/<path>`), which turns them into the Function URL event the handler receives; the
handler talks to a real PostgreSQL through a real PgBouncer. Every generated request, valid or not
(positive and negative generation), must get an answer below 500, and a request the API rejects
(4xx) must not have written anything: the table's row count is compared around each rejected case.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from slotguard.local.runtime import FunctionSpec, LocalRuntime, RuntimeSettings
from tests.fixtures_functions import REGION, FunctionsStack, LocalAws

pytestmark = pytest.mark.integration

KIT_ROOT = Path(__file__).resolve().parents[1]
MAX_EXAMPLES = 40  # per operation (4 operations): bounded, a few seconds each

schema = schemathesis.openapi.from_path(KIT_ROOT / "functions" / "openapi.json")
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES
)


@pytest.fixture(scope="module")
def api_url(functions_stack: FunctionsStack, local_aws: LocalAws) -> Iterator[str]:
    """The api function served by a local runtime, wired to the pooler; its Function URL base."""
    arn = local_aws.put_secret(functions_stack.secret_value())
    environment = {
        **functions_stack.env(via="pooler", secret_arn=arn),
        "AWS_ENDPOINT_URL": local_aws.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
    spec = FunctionSpec(
        name="api",
        handler="functions.api.handler",
        code_dir=KIT_ROOT,
        environment=environment,
        timeout_s=15,
        reserved_concurrency=10,
    )
    logs = Path(tempfile.mkdtemp(prefix="slotguard-schemathesis-"))
    runtime = LocalRuntime([spec], RuntimeSettings(region=REGION, log_dir=logs)).start()
    try:
        yield f"{runtime.endpoint_url}/urls/api"
    finally:
        runtime.stop()
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="module")
def count_rows(functions_stack: FunctionsStack) -> Iterator[Any]:
    conn = psycopg.connect(functions_stack.postgres.conninfo(dbname="app"), autocommit=True)

    def count() -> int:
        row = conn.execute("SELECT count(*) FROM app.items").fetchone()
        assert row is not None
        return int(row[0])

    yield count
    conn.close()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_answers_5xx_and_rejected_requests_write_nothing(
    case: Any, api_url: str, count_rows: Any
) -> None:
    before = count_rows()
    response = case.call(base_url=api_url, timeout=20)
    after = count_rows()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
    if 400 <= response.status_code < 500:
        assert after == before, f"a rejected {case.method} {case.path} wrote {after - before} rows"
        # A rejection says why, as a JSON problem.
        assert "reason" in response.json()


@pytest.mark.parametrize("body", [b"\x80", b"\xff\xfe{}", b'{"name": "\xe9"}'])
def test_a_body_that_is_not_utf8_is_a_4xx_and_writes_nothing(
    api_url: str, count_rows: Any, body: bytes
) -> None:
    # The Function URL passes such a body base64-encoded; found by the schemathesis run above.
    before = count_rows()
    request = urllib.request.Request(  # noqa: S310 - the runtime on loopback
        f"{api_url}/items",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=20)  # noqa: S310
    assert answer.value.code == 422
    assert count_rows() == before
