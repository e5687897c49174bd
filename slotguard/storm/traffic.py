"""What a storm sends: which function of the stack, and which event, for any function a fork has.

The function is `--function`, else the stack's `storm_function`, else its first function. The
event is `--event FILE`, else the function's own sample event kept next to its handler
(`functions/<module>.event.json` for `functions.<module>.handler`, see docs/functions.md). A
string in the event may hold `{index}`: each invocation gets its own number there (a unique
name or idempotency key per request).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import StackSettings

KIT_ROOT = Path(__file__).resolve().parents[2]
INDEX = "{index}"


class TrafficError(ValueError):
    """The storm's function or event cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Traffic:
    """One function of the stack and the event each of its invocations gets."""

    function: str
    event: Any
    source: str  # where the event came from, for the report

    def payload(self, index: int) -> Any:
        """The event of invocation `index`, with `{index}` replaced in every string."""
        return _substitute(self.event, str(index))


def _substitute(value: Any, index: str) -> Any:
    if isinstance(value, str):
        return value.replace(INDEX, index)
    if isinstance(value, list):
        return [_substitute(v, index) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, index) for k, v in value.items()}
    return value


def choose_function(settings: StackSettings, name: str | None) -> str:
    """`name` if the stack has it, else the stack's default; a typo is named with its fix."""
    if name is None:
        return settings.traffic_function
    if name in settings.functions:
        return name
    close = difflib.get_close_matches(name, list(settings.functions), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise TrafficError(
        f"stack {settings.stack} has no function {name!r}; {hint}"
        f"its functions: {', '.join(settings.functions)}"
    )


def sample_event_path(settings: StackSettings, function: str, root: Path = KIT_ROOT) -> Path:
    """`functions/<module>.event.json`, next to the function's handler module."""
    module = settings.functions[function].handler.rsplit(".", 1)[0]
    return root.joinpath(*module.split(".")).with_suffix(".event.json")


def load_event(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrafficError(f"no event file {path}") from None
    except (OSError, ValueError) as exc:
        raise TrafficError(f"event file {path} is not JSON: {exc}") from None


def choose_traffic(
    settings: StackSettings,
    function: str | None = None,
    event: Path | None = None,
    root: Path = KIT_ROOT,
) -> Traffic:
    """The function and event a storm sends, or a `TrafficError` saying what to pass."""
    name = choose_function(settings, function)
    if event is not None:
        return Traffic(name, load_event(event), str(event))
    sample = sample_event_path(settings, name, root)
    if not sample.exists():
        relative = sample.relative_to(root) if sample.is_relative_to(root) else sample
        raise TrafficError(
            f"function {name!r} has no sample event: pass --event FILE (a JSON event) or keep "
            f"one at {relative} (see docs/functions.md)"
        )
    return Traffic(name, load_event(sample), str(sample.relative_to(root)))


def fixed_payload(event: Any) -> Callable[[int], Any]:
    """A payload function for a constant event (the probe's hold)."""
    return lambda _index: event
