"""The drills' pure parts: auth-file parsing, recovery arithmetic, per-thread library state."""

from __future__ import annotations

import pathlib
import tempfile
import threading
import time
from abc import ABC

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pgbouncer.config import render_auth_file
from slotguard.cli import app
from slotguard.drills.faults import read_auth_file
from slotguard.drills.report import recovery
from slotguard.drills.storm import Attempt, RequestLog, create_event
from slotguard.local.runtime.isolation import per_thread_class_attributes
from slotguard.local.state import STATE_DIR_ENV


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).map(
            lambda s: "SCRAM-SHA-256$" + s
        ),
        min_size=1,
        max_size=5,
    )
)
def test_auth_file_reads_back_what_was_rendered(entries: dict[str, str]) -> None:
    path_text = render_auth_file(entries)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(path_text)
    assert read_auth_file(pathlib.Path(handle.name)) == entries


def _attempt(start: float, end: float, ok: bool) -> Attempt:
    return Attempt("k", start, end, 201 if ok else 503, None if ok else "x")


def test_recovery_counts_from_the_fault_to_first_and_steady_success() -> None:
    attempts = [
        _attempt(9.0, 9.5, True),  # before the fault
        _attempt(10.1, 10.4, False),
        _attempt(10.5, 11.0, True),  # first success: 1.0 s after the fault
        _attempt(11.1, 12.0, False),  # a later failure: not steady yet
        _attempt(12.1, 12.5, True),  # steady: 2.5 s after the fault
        _attempt(12.6, 12.7, True),
    ]
    result = recovery(attempts, fault_at=10.0)
    assert result.first_success_s == 1.0
    assert result.steady_state_s == 2.5
    assert recovery([_attempt(10.1, 10.2, False)], 10.0).first_success_s is None


def test_request_log_settles_acknowledged_rejected_and_abandoned() -> None:
    log = RequestLog()
    log.settle("a", Attempt("a", 0, 1, 201, None))
    log.settle("b", Attempt("b", 0, 1, 422, "rejected 422"))
    log.settle("c", Attempt("c", 0, 1, 429, "throttled"))
    log.settle("d", Attempt("d", 0, 1, None, "no answer"))
    assert log.acknowledged == {"a": 201}
    assert log.rejected == {"b": 422}
    assert log.abandoned == {"c": "throttled", "d": "no answer"}


def test_create_event_carries_the_key_header() -> None:
    event = create_event("run-1-2", "drill-run-1-2", 3)
    assert event["headers"]["idempotency-key"] == "run-1-2"
    assert event["requestContext"]["http"]["method"] == "POST"


def test_per_thread_class_attributes_keep_concurrent_values_apart() -> None:
    class Router(ABC):  # noqa: B024 - like powertools' BaseRouter: an ABC for its metaclass
        current: object = "initial"

    class Resolver(Router):
        def read(self) -> object:
            return self.current

    per_thread_class_attributes(Router, ("current",))
    seen: dict[int, tuple[object, object]] = {}
    barrier = threading.Barrier(8)

    def invocation(n: int) -> None:
        Router.current = n  # as powertools' resolve() assigns on the class
        barrier.wait()
        time.sleep(0.01)
        seen[n] = (Resolver().read(), Router.current)

    threads = [threading.Thread(target=invocation, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {n: (n, n) for n in range(8)}
    assert Router.current == "initial"  # this thread's value, set before


def test_a_plain_class_is_refused_by_name() -> None:
    class Plain:
        current = 1

    try:
        per_thread_class_attributes(Plain, ("current",))
    except TypeError as exc:
        assert "Plain" in str(exc)
    else:
        raise AssertionError("a class with metaclass `type` must be refused")


def test_the_command_names_the_drills_and_needs_a_running_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["drill", "pgbouncer-crash"])
    assert unknown.exit_code == 2
    assert "pgbouncer-kill" in unknown.output
    monkeypatch.setenv(STATE_DIR_ENV, tempfile.mkdtemp(prefix="slotguard-nostack-"))
    stopped = runner.invoke(app, ["drill", "postgres-restart", "--stack", "dev"])
    assert stopped.exit_code == 1
    assert "slotguard up --stack dev" in " ".join(stopped.output.split())
