"""What the suite starts, it ends: one marker per pytest process, its own state directory, a reaper.

PostgreSQL (`pg_ctl` daemonises it into a session of its own), PgBouncer and a local stack's
supervisor are started in new sessions on purpose, so neither a failed teardown nor Ctrl-C (which
signals the terminal's foreground process group only) ends them. So every pytest process puts
`SLOTGUARD_TEST_RUN=<marker>` into its environment before any test runs; every process a test
starts inherits it (the runtime's workers, whose environment is Lambda's, are found as
descendants). When the process ends, after the fixtures' own teardown, whatever still carries the
marker is stopped: at session finish, at unconfigure, and at interpreter exit, whichever comes
first, also after Ctrl-C or SIGTERM (turned into Ctrl-C here so the teardown runs).

Markers nest: an xdist worker's is `<controller>/<worker>`, a pytest run inside a test appends to
its parent's, and a process reaps its own marker and everything under it. The xdist controller
starts nothing itself, so it keeps the marker out of its environment (its workers would carry
it) and reaps all of its workers' markers at the end, after they have exited.

Each pytest process also gets its own `$SLOTGUARD_STATE_DIR` (removed at the end), so a test that
brings up a stack without choosing a state directory never touches `.state/` of the checkout, a
stack someone runs there, or another worker's stack.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from slotguard.local.state import STATE_DIR_ENV
from tests import scratch

RUN_ENV = "SLOTGUARD_TEST_RUN"
# The controller's marker, handed to its xdist workers (they append their id).
ROOT_ENV = "SLOTGUARD_TEST_RUN_ROOT"
STOP_GRACE_S = 5.0

_state: dict[str, Any] = {
    "prefix": None,
    "controller": False,
    "reaped": [],
    "state_dir": None,
    "handlers": {},
}


# -- finding and stopping the suite's processes -------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None when it is gone."""
    try:
        after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(after[1]), after[0]


def _marker(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    key = RUN_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(key):
            return entry[len(key) :].decode(errors="replace")
    return None


def _belongs(marker: str | None, prefix: str) -> bool:
    return marker is not None and (marker == prefix or marker.startswith(prefix + "/"))


def suite_processes(prefix: str, *, own_children: bool = False) -> list[int]:
    """Live processes carrying `prefix` (or a marker nested under it), and their descendants.

    With `own_children`, this process's children count too: a runtime a test started in process
    spawns its workers with Lambda's environment, so only their parent tells whose they are.
    """
    me = os.getpid()
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[1] == "Z" or pid == me:
            continue
        parents[pid] = stat[0]
        if _belongs(_marker(pid), prefix) or (own_children and stat[0] == me):
            found.add(pid)
    grown = True
    while grown:  # descendants whose environment was replaced (the runtime's workers)
        grown = False
        for pid, parent in parents.items():
            if parent in found and pid not in found and pid != me:
                found.add(pid)
                grown = True
    return sorted(found)


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        command = "?"
    return f"{pid} {command.strip()[:120]}"


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_processes(pids: list[int]) -> None:
    """PostgreSQL gets SIGQUIT (immediate shutdown), the rest SIGTERM; SIGKILL after a grace."""
    if not pids:
        return
    comm: dict[int, str] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            comm[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    _signal_all([p for p in pids if comm.get(p) == "postgres"], signal.SIGQUIT)
    _signal_all([p for p in pids if comm.get(p) != "postgres"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        left = [p for p in pids if (s := _stat(p)) is not None and s[1] != "Z"]
        if not left:
            return
        time.sleep(0.05)
    _signal_all(pids, signal.SIGKILL)


def reap(prefix: str, *, own_children: bool = False) -> list[str]:
    """Stop every process of `prefix`; returns what was found running (empty when clean)."""
    pids = suite_processes(prefix, own_children=own_children)
    described = [_describe(pid) for pid in pids]
    stop_processes(pids)
    return described


# -- the plugin ---------------------------------------------------------------------------------


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM / SIGHUP as Ctrl-C: pytest then tears down what the tests started."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _finish() -> None:
    """Reap this process's marker and remove its state directory and scratch directories."""
    prefix = _state["prefix"]
    if prefix is None:
        return
    # The xdist controller's children are its workers, which reap their own.
    _state["reaped"] += reap(prefix, own_children=not _state["controller"])
    state_dir = _state["state_dir"]
    if state_dir is not None:
        shutil.rmtree(state_dir, ignore_errors=True)
    scratch.remove_all()


def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        prefix = f"{os.environ[ROOT_ENV]}/{worker['workerid']}"
    else:
        prefix = f"{os.environ.get(RUN_ENV, 'run')}/{uuid.uuid4().hex[:12]}"
        os.environ[ROOT_ENV] = prefix
    _state["prefix"] = prefix
    controller = worker is None and getattr(config.option, "dist", "no") != "no"
    _state["controller"] = controller
    if not controller:
        os.environ[RUN_ENV] = prefix
        state_dir = scratch.reachable_temp_dir("slotguard-state-")
        os.environ[STATE_DIR_ENV] = str(state_dir)
        _state["state_dir"] = state_dir
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            _state["handlers"][sig] = signal.signal(sig, _interrupt)
    atexit.register(_finish)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the fixtures' teardown (the runner's own sessionfinish): reap, and say so."""
    _finish()
    reaped = _state["reaped"]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reaped and reporter is not None:
        reporter.write_line(
            f"slotguard: stopped {len(reaped)} process(es) the tests left running: "
            + "; ".join(reaped[:5]),
            yellow=True,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    _finish()
    for sig, previous in _state["handlers"].items():
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(sig, previous)
    _state["handlers"] = {}
