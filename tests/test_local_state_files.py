"""The stack's state files are written whole: `up` polls the record the supervisor writes."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from slotguard.local.state import write_private


def test_a_private_file_is_owner_only_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "stack.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]


def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    # Written in place (truncate, then write), a poller could read "" between the two: `up`
    # then failed with "Invalid JSON: EOF while parsing" while the supervisor wrote its record.
    target = tmp_path / "stack.json"
    texts = [f'{{"n": {i}, "pad": "{"x" * 4096}"}}\n' for i in range(2)]
    write_private(target, texts[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(2000):
            write_private(target, texts[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(texts), sorted(t[:20] for t in seen - set(texts))
