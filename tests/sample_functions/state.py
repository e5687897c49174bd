"""Module-scope state: one copy per instance, so each instance has its own token and counter."""

from __future__ import annotations

import uuid

TOKEN = uuid.uuid4().hex
invocations = 0


def count() -> int:
    global invocations  # noqa: PLW0603 - module state is the point of this module
    invocations += 1
    return invocations
