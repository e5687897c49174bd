"""The kit's tests that exercise the example handlers, which a fork may delete.

A fork that removes `functions/api.py` or `functions/stock.py` (CONTRIBUTING.md, "Which files are
whose") loses the tests of those examples, and the tests that storm the example API, instead of
a red suite: they are not collected, and the run's header says which and why. Every other kit
test uses its own fixtures.
"""

from __future__ import annotations

from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
# test module -> the example module it needs
NEEDS = {
    "test_api_schemathesis.py": "api",
    "test_functions_api.py": "api",
    "test_drills.py": "api",
    "test_drills_pooler_ops.py": "api",
    "test_local_stack.py": "api",
    "test_functions_stock.py": "stock",
}
# single tests that storm the example API
NEEDS_TESTS = {
    "test_local_commands.py::test_all_wirings_report_although_the_server_refuses_every_new_login": (
        "api"
    ),
}


def missing(module: str) -> bool:
    return not (FUNCTIONS / f"{module}.py").exists()


def removed() -> list[str]:
    """The test modules left out because their example is gone."""
    return sorted(name for name, module in NEEDS.items() if missing(module))
