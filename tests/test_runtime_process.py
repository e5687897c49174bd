"""The runtime as the local target starts it: a registry file, a background process, a signal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError

from slotguard.local.runtime import FunctionSpec, Registry, RuntimeAdminClient
from slotguard.storm import lambda_client
from tests.fixtures_local import SAMPLE_CODE_DIR


def test_specs_refuse_what_lambda_would_refuse():
    with pytest.raises(ValidationError, match=re.escape("package.module.function")):
        FunctionSpec(name="api", handler="handler", code_dir=SAMPLE_CODE_DIR)
    with pytest.raises(ValidationError, match="less than or equal to 900"):
        FunctionSpec(name="api", handler="a.b.c", code_dir=SAMPLE_CODE_DIR, timeout_s=901)
    with pytest.raises(ValidationError, match="should match pattern"):
        FunctionSpec(name="api v2", handler="a.b.c", code_dir=SAMPLE_CODE_DIR)
    spec = FunctionSpec(name="api", handler="functions.api.handler", code_dir=SAMPLE_CODE_DIR)
    with pytest.raises(FileNotFoundError, match="set code_dir to the directory that contains"):
        spec.check_code()
    with pytest.raises(ValidationError, match="repeated: api"):
        Registry.model_validate({"functions": [spec.model_dump(), spec.model_dump()]})


def test_served_from_a_registry_file_and_stopped_by_sigterm(scratch_dir):
    registry = {
        "settings": {"freeze_after_s": 1, "reap_after_s": 60, "log_dir": str(scratch_dir / "logs")},
        "functions": [
            {
                "name": "echo",
                "handler": "sample_functions.echo.handler",
                "code_dir": str(SAMPLE_CODE_DIR),
                "environment": {"SAMPLE_VALUE": "from-file"},
            }
        ],
    }
    (scratch_dir / "registry.json").write_text(json.dumps(registry))
    ready = scratch_dir / "endpoint"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slotguard.local.runtime",
            str(scratch_dir / "registry.json"),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None, "the runtime exited at start"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        url = ready.read_text().strip()
        response = lambda_client(endpoint_url=url).invoke(
            FunctionName="echo", Payload=b'{"say": "x"}'
        )
        assert json.loads(response["Payload"].read())["sample_value"] == "from-file"
        worker_pid = RuntimeAdminClient(url).stats()["echo"]["worker_pid"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    log = (scratch_dir / "logs" / "echo.log").read_text()
    assert "saying x" in log
    assert "REPORT RequestId" in log
    with pytest.raises(ProcessLookupError):  # the worker went with the runtime
        os.kill(worker_pid, 0)
