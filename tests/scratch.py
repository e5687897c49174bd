"""Temporary directories the unprivileged server account can reach."""

from __future__ import annotations

import tempfile
from pathlib import Path


def reachable_temp_dir(prefix: str) -> Path:
    """A new directory under /tmp with mode 0755.

    pytest's own temporary directories are 0700, so PostgreSQL and PgBouncer, started as the
    unprivileged service account, could not read what the tests put there.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
