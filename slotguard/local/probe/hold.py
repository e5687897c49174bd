"""`probe.hold.handler`: one transaction that runs `pg_sleep(query_ms / 1000)` through the helper.

The local runtime loads one copy of this package per function instance. The connection helper
lives in the `functions` package, which this package cannot reach with a relative import, so each
copy loads its own copy of `functions` *as a sub-package of itself* (`<alias>.functions`): the kept
connection is then per instance, and the runtime's reaping, which drops every module under the
instance's alias, drops the helper's connection with it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

MAX_QUERY_MS = 60_000


def _functions_dir() -> Path:
    spec = importlib.util.find_spec("functions")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the `functions` package is not importable from this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_helper() -> tuple[ModuleType, type[Exception]]:
    name = f"{__package__}.functions"
    directory = _functions_dir()
    spec = importlib.util.spec_from_file_location(
        name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the functions package from {directory}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    db = importlib.import_module(f"{name}.db")
    errors = importlib.import_module(f"{name}.errors")
    return db, errors.DatabaseUnavailableError


_db, _Unavailable = _load_helper()


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "body": json.dumps(body)}


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Hold a connection for `event["query_ms"]` milliseconds inside one transaction."""
    raw = event.get("query_ms", 0) if isinstance(event, dict) else 0
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not 0 <= raw <= MAX_QUERY_MS:
        return _answer(
            400, {"error": "bad_request", "reason": f"query_ms must be 0..{MAX_QUERY_MS}"}
        )
    try:
        with _db.transaction(context) as conn:
            conn.execute("SELECT pg_sleep(%s)", (raw / 1000.0,))
    except _Unavailable as exc:
        return _answer(503, {"error": "database_unavailable", "reason": str(exc)})
    return _answer(200, {"held_ms": raw})
