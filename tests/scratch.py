"""Temporary directories the unprivileged server account can reach."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

# Every directory made here, so the session guard removes what an interrupted run left behind.
_created: list[Path] = []


def reachable_temp_dir(prefix: str) -> Path:
    """A new directory under /tmp with mode 0755.

    pytest's own temporary directories are 0700, so PostgreSQL and PgBouncer, started as the
    unprivileged service account, could not read what the tests put there.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    _created.append(path)
    return path


def remove_all() -> None:
    """Remove every directory `reachable_temp_dir` made in this process (once its servers stop)."""
    while _created:
        shutil.rmtree(_created.pop(), ignore_errors=True)
