"""Heavy test files first: with a file per xdist worker at a time, the last file sets the end.

A file that brings up a whole stack or builds artifacts declares it with
`pytestmark = [..., pytest.mark.heavy(seconds=N)]` (N: roughly what it takes on two cores). Such
files are handed out first, longest first, so no long file starts while the other worker has
nothing left to do. Every other file keeps its place in pytest-randomly's shuffled order, and the
order of the tests inside a file stays random.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "heavy(seconds): a test file that takes long (a stack, a build); scheduled first",
    )


def _weight(item: pytest.Item) -> float:
    marker = item.get_closest_marker("heavy")
    if marker is None:
        return 0.0
    return -float(marker.kwargs.get("seconds", 60))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # After pytest-randomly's shuffle (it reorders in a wrapper, before plain hooks); the sort is
    # stable, so the items of one file stay together and in their shuffled order.
    items.sort(key=_weight)
