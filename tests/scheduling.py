"""How xdist hands out the tests: every test under its own node id, heavy test files first.

With a file per xdist worker at a time, the last file to start sets the end of the run.

A file that brings up a whole stack or builds artifacts declares it with
`pytestmark = [..., pytest.mark.heavy(seconds=N)]` (N: roughly what it takes on two cores). Such
files are handed out first, longest first, so no long file starts while the other worker has
nothing left to do. Every other file keeps its place in pytest-randomly's shuffled order, and the
order of the tests inside a file stays random.
"""

from __future__ import annotations

from collections import Counter

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


def unique_node_ids(items: list[pytest.Item]) -> None:
    """Give items that share a node id one of their own, from their name.

    schemathesis's `schema.parametrize()` makes one item per API operation, all with the test's
    node id (`...::test_api[GET /items]` is only their name). xdist hands out tests by node id,
    so it would run the first operation and silently drop the others.
    """
    counts = Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1:
            _rename(item, f"{item.nodeid.rsplit('::', 1)[0]}::{item.name}")


def _rename(item: pytest.Item, nodeid: str) -> None:
    # pytest has no public setter: 9.x keeps a structured `_id`, earlier releases `_nodeid`.
    try:
        from _pytest.nodeid import NodeId
    except ImportError:
        object.__setattr__(item, "_nodeid", nodeid)
    else:
        object.__setattr__(item, "_id", NodeId.parse(nodeid))
    assert item.nodeid == nodeid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unique_node_ids(items)
    # After pytest-randomly's shuffle (it reorders in a wrapper, before plain hooks); the sort is
    # stable, so the items of one file stay together and in their shuffled order.
    items.sort(key=_weight)
