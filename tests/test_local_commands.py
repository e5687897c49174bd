"""The commands against one running dev stack: `status` (where the stack is, also as JSON), and
`storm --wiring all` running to its report while the database refuses every new login.

A direct fleet of a thousand leaves, after its burst, logins in progress that the server only
ends at `authentication_timeout`; once the postmaster's children reach its cap it answers
"sorry, too many clients already" to everyone, the superuser included. Here a burst of the dev
stack's size saturates app_user's slots, and sockets left mid-login stand in for the thousand
abandoned logins (a small burst on two cores leaves too few to reach the cap by itself): the
next wiring must still be prepared over the storm's kept connection, wait for the logins to end,
and the command must end with the table of all three wirings.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from slotguard.cli import app
from slotguard.local.control import down, up
from slotguard.local.fleet import starting_backends
from slotguard.local.stack import StackPlan, master_conninfo
from slotguard.local.state import STATE_DIR_ENV, StackRecord
from slotguard.local.targets import StormTarget, local_target
from slotguard.storm import Wiring, lambda_client
from tests.scratch import reachable_temp_dir

pytestmark = [pytest.mark.integration, pytest.mark.heavy(seconds=90)]

BURST = 60  # > app_user's CONNECTION LIMIT (17): the direct wirings run out of slots
# Each invocation holds its connection this long, so the burst needs BURST instances at once.
# Without a hold an invocation ends in milliseconds and its instance, still holding its
# connection, serves the next arrival: on a loaded machine the burst reaches the runtime spread
# out enough that 17 instances serve all of it and the naive wiring is never refused. Short
# enough that the pooled wiring's queue (60 x 0.4 s over 10 server connections, 2.4 s) stays
# well inside query_wait_timeout (5 s).
QUERY_MS = 400
# Longer than the 30 s the storm once retried a fresh admin connection for before giving up.
HOLD_S = 35.0


@pytest.fixture(scope="module")
def stack() -> Iterator[StackPlan]:
    base = reachable_temp_dir("slotguard-saturation-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_DIR_ENV, str(base))
        plan = StackPlan.load("dev", base=base)
        assert not up(plan).already_running
        try:
            yield plan
        finally:
            down(plan)
            shutil.rmtree(base, ignore_errors=True)


def test_status_shows_where_the_stack_is_as_up_does_and_as_json(stack):
    record = up(stack).record
    shown = CliRunner().invoke(app, ["status", "--stack", "dev"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    for text in (
        f"127.0.0.1:{record.ports.postgres} (max_connections 25, TLS)",
        f"127.0.0.1:{record.ports.pgbouncer} (2 PgBouncer processes, ceiling 17)",
        record.runtime_url,
        record.aws_url,
        str(stack.paths.root),
        "health: 200 ok",
    ):
        assert text in shown.output, text
    result = CliRunner().invoke(app, ["status", "--stack", "dev", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["state_dir"] == str(stack.paths.root)
    assert (document["database"]["port"], document["pooler"]["port"]) == (
        record.ports.postgres,
        record.ports.pgbouncer,
    )
    assert document["health"]["status"] == 200
    assert document["database_connections"]["max_connections"] == 25
    assert {a["key"] for a in document["alarms"]} >= {"db-connections-bypass"}
    assert "api" in document["function_stats"]
    # The addresses are the live ones: the functions endpoint lists the functions, and the
    # database answers on the port given.
    client = lambda_client(endpoint_url=document["functions"]["endpoint_url"], region_name="x")
    listed = {f["FunctionName"] for f in client.list_functions()["Functions"]}
    assert set(document["functions"]["names"]) <= listed
    database = document["database"]
    conninfo = psycopg.conninfo.make_conninfo(
        master_conninfo(record), host=database["host"], port=database["port"]
    )
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_status_json_of_a_stopped_stack_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    result = CliRunner().invoke(app, ["status", "--stack", "dev", "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["running"] is False
    assert "slotguard up --stack dev" in document["error"]


def test_down_of_a_stack_never_started_here_says_so_and_creates_nothing(tmp_path, monkeypatch):
    # It once chose and saved ports for the stack on its way, and failed with FileNotFoundError.
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    result = CliRunner().invoke(app, ["down", "--stack", "workloads"])
    assert result.exit_code == 0, result.output
    assert "stack workloads was not running" in result.stdout
    assert list(tmp_path.iterdir()) == []


def refused(record: StackRecord) -> str | None:
    """The error a fresh superuser login meets now, or None if it is let in."""
    try:
        psycopg.connect(master_conninfo(record), autocommit=True).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    return None


class StalledLogins:
    """TCP connections to the database that never send a startup packet, until closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []

    def fill(self, record: StackRecord, most: int = 400) -> str:
        """Open stalled logins until a superuser is refused; return the refusal."""
        while len(self.sockets) < most:
            self.sockets.extend(
                socket.create_connection(("127.0.0.1", self.port)) for _ in range(10)
            )
            error = refused(record)
            if error is not None:
                return error
        raise AssertionError(f"{most} stalled logins did not saturate the server")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_all_wirings_report_although_the_server_refuses_every_new_login(stack, monkeypatch):
    record = up(stack).record
    seen: dict[str, Any] = {}
    real_local_target = local_target

    def saturating_target(*args: Any, **kwargs: Any) -> StormTarget:
        target = real_local_target(*args, **kwargs)
        prepare = target.before_each
        assert prepare is not None

        def before_each(wiring: Wiring) -> None:
            if wiring.name == "naive":  # just after the direct burst
                logins = StalledLogins(record.ports.postgres)
                seen["refusal"] = logins.fill(record)
                seen["stalled"] = len(logins.sockets)
                threading.Timer(HOLD_S, logins.close).start()
            prepare(wiring)
            if wiring.name == "naive":
                with psycopg.connect(master_conninfo(record), autocommit=True) as conn:
                    seen["starting_after_release"] = starting_backends(conn)

        target.before_each = before_each
        return target

    # The command builds its target through this name: the wrapper saturates the server.
    monkeypatch.setattr("slotguard.commands.storm.local_target", saturating_target)
    out: Path = reachable_temp_dir("slotguard-saturation-out-") / "storm.json"
    result = CliRunner().invoke(
        app,
        [
            "storm",
            "--stack",
            "dev",
            "--wiring",
            "all",
            "--burst",
            str(BURST),
            "--query-ms",
            str(QUERY_MS),
            "--json",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    # The server was saturated as after a large direct burst: even the superuser was refused.
    assert "too many clients" in seen["refusal"], seen
    # The naive wiring started only once every stalled login had ended.
    assert seen["starting_after_release"] == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == {}
    by_name = {w["wiring"]: w for w in report["wirings"]}
    assert list(by_name) == ["pooled", "direct", "naive"]
    assert all(w["invocations"] == BURST for w in by_name.values())
    assert by_name["pooled"]["failed"] == 0
    # The direct wirings saturate app_user's slots: some of their invocations are refused.
    assert by_name["direct"]["failed_by_cause"].get("too many connections", 0) > 0
    assert by_name["naive"]["failed_by_cause"].get("too many connections", 0) > 0
    for wiring in ("pooled", "direct", "naive"):
        assert wiring in result.output
    assert "before naive: released" in result.output
    shutil.rmtree(out.parent, ignore_errors=True)
