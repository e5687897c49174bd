"""Per-instance copies of library state that assumes one invocation per process.

On Lambda every sandbox is a process of its own, so a library may keep the current invocation in
a class attribute. Here the instances of a function are threads of one worker process sharing the
third-party libraries (only the function's own package is copied per instance), so such state
would leak between concurrent invocations. Powertools' event handler does exactly this:
`BaseRouter.current_event` and `BaseRouter.lambda_context` are class attributes set by every
`resolve()`, and two concurrent invocations then read each other's request (a create storing one
request's Idempotency-Key with another's body). Making those attributes per thread restores the
one-invocation-per-sandbox model; no library offers this, hence the small descriptors below.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

# (module, class, attributes) known to hold the current invocation at class level.
KNOWN_CLASS_STATE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "aws_lambda_powertools.event_handler.api_gateway",
        "BaseRouter",
        ("current_event", "lambda_context"),
    ),
)


class _PerThread:
    """A data descriptor whose value is per thread (instance access and class access alike)."""

    def __init__(self, name: str, local: threading.local) -> None:
        self.name = name
        self.local = local

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        try:
            return getattr(self.local, self.name)
        except AttributeError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: object, value: Any) -> None:
        setattr(self.local, self.name, value)


def per_thread_class_attributes(cls: type, names: tuple[str, ...]) -> None:
    """Make `cls.<name>` (read or assigned on the class or an instance) a per-thread value.

    Assignment on the class (`cls.name = v`) goes through the metaclass, so the class gets a
    metaclass of its own carrying the same descriptors; reads through an instance or a subclass
    find the descriptor in the class dictionary. Python allows swapping the metaclass only when
    the current one is defined in Python (`ABCMeta` is; plain `type` is not).
    """
    if getattr(cls, "__slotguard_per_thread__", False):
        return
    meta = type(cls)
    if meta is type:
        raise TypeError(
            f"{cls.__qualname__} has the built-in metaclass `type`, which cannot be swapped"
        )
    local = threading.local()
    descriptors = {name: _PerThread(name, local) for name in names}
    for name, descriptor in descriptors.items():
        current = cls.__dict__.get(name)
        setattr(cls, name, descriptor)
        if current is not None and not isinstance(current, _PerThread):
            descriptor.__set__(None, current)
    per_thread_meta = type(f"PerThread{meta.__name__}", (meta,), dict(descriptors))
    cls.__class__ = per_thread_meta
    type.__setattr__(cls, "__slotguard_per_thread__", True)


def isolate_known_libraries() -> list[str]:
    """Apply `per_thread_class_attributes` to every known class that is importable here."""
    done = []
    for module_name, class_name, names in KNOWN_CLASS_STATE:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if isinstance(cls, type):
            per_thread_class_attributes(cls, names)
            done.append(f"{module_name}.{class_name}")
    return done
