"""An interrupted test run leaves nothing running: a pytest run in a subprocess, stopped mid-test.

The inner run holds a real PostgreSQL and PgBouncer from the suite's fixtures (both run in
sessions of their own, out of reach of the terminal's Ctrl-C) and two helper processes that no
fixture knows of (a test that forgot its cleanup), one of them without the run's marker in its
environment (as the runtime's workers are started). It is interrupted as a terminal's Ctrl-C does
(SIGINT to its process group) or as a CI runner cancels a job (SIGTERM); afterwards no process it
started may be left and the ports are free again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scratch import reachable_temp_dir
from tests.session_guard import suite_processes

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=35)]

REPO = Path(__file__).resolve().parent.parent

INNER_TEST = """
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Ctrl-C reaches a terminal's foreground job with SIGINT handled; a suite started in the
# background by a non-interactive shell (`make test &`) inherits SIGINT ignored, Python keeps it
# ignored, and this run would sleep on through the Ctrl-C the test sends it.
signal.signal(signal.SIGINT, signal.default_int_handler)


def test_holds_servers(postgres_factory, pgbouncer_factory):
    server = postgres_factory(max_connections=10)
    bouncer = pgbouncer_factory(server, users={"inner": "inner-password"}, pool_size=2)
    forgotten = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    # Started with an environment of its own, as the runtime starts its workers: no marker.
    bare = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env={}, start_new_session=True
    )
    Path(os.environ["INNER_READY"]).write_text(json.dumps({
        "marker": os.environ["SLOTGUARD_TEST_RUN"],
        "state_dir": os.environ["SLOTGUARD_STATE_DIR"],
        "postgres_pid": server.pid(),
        "postgres_port": server.settings.port,
        "pgbouncer_pids": bouncer.pids(),
        "pgbouncer_port": bouncer.port,
        "forgotten_pid": forgotten.pid,
        "bare_pid": bare.pid,
        "data_dir": str(server.root),
    }))
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_process_and_no_port(sig: signal.Signals) -> None:
    work = reachable_temp_dir("slotguard-interrupted-")
    (work / "test_inner.py").write_text(INNER_TEST)
    ready = work / "ready.json"
    env = {**os.environ, "INNER_READY": str(ready), "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    inner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(work),
            str(work / "test_inner.py"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert inner.poll() is None, inner.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the inner run did not start its servers"
            time.sleep(0.1)
        time.sleep(0.2)  # the file is complete once it parses
        started = json.loads(ready.read_text())
        assert _alive(started["postgres_pid"])
        assert all(_alive(pid) for pid in started["pgbouncer_pids"])
        assert _alive(started["forgotten_pid"])
        assert _alive(started["bare_pid"])
        os.killpg(inner.pid, sig)
        hung = False
        try:
            output = inner.communicate(timeout=90)[0].decode()
        except subprocess.TimeoutExpired:
            # Say where it hangs: pytest's faulthandler dumps every thread's stack on SIGABRT.
            hung = True
            inner.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                inner.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(inner.pid, signal.SIGKILL)
            output = inner.communicate()[0].decode()
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait()
    left = [
        pid
        for pid in (
            started["postgres_pid"],
            started["forgotten_pid"],
            started["bare_pid"],
            *started["pgbouncer_pids"],
        )
        if _alive(pid)
    ]
    try:
        assert not hung, f"the inner run still ran 90 s after {sig.name}:\n{output[-6000:]}"
        assert left == [], output[-3000:]
        assert suite_processes(started["marker"]) == [], output[-3000:]
        assert _port_free(started["postgres_port"])
        assert _port_free(started["pgbouncer_port"])
        # Its state and scratch directories are gone with it.
        assert not Path(started["state_dir"]).exists()
        assert not Path(started["data_dir"]).exists()
        assert "the tests left running" in output, output[-3000:]
        assert f"{started['forgotten_pid']} " in output.split("the tests left running")[1]
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
