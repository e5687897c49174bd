"""Whether a running local stack still matches its stack file.

The record of a running stack keeps the resolved settings it was started with; `slotguard up`
compares them with what `Pulumi.<stack>.yaml` resolves to now, so an edited file is never
silently ignored ("already running" with the old stack).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from infra.settings import StackSettings


def settings_document(settings: StackSettings) -> dict[str, Any]:
    """The resolved settings (defaults filled in) as JSON-compatible data."""
    document: dict[str, Any] = settings.model_dump(mode="json")
    return document


def settings_digest(document: dict[str, Any]) -> str:
    """A stable hash of resolved settings."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted paths whose values differ between two settings documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(path)
            else:
                paths += changed_paths(old[key], new[key], path)
        return paths
    return [] if old == new else [prefix or "(settings)"]
