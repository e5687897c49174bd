"""Load one independent copy of a function package per instance, and drop it like Lambda does.

Each instance imports the package under a unique alias whose `__path__` is the real package
directory, so `from .db import connect` inside it resolves to *that* copy: module-scope state
(the kept database connection) belongs to one instance, as it belongs to one sandbox on AWS.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from slotguard.local.runtime.spec import FunctionSpec

Handler = Callable[[Any, Any], Any]

# How deep to look inside module globals for open connections when an instance is reaped: a
# module global, an attribute of a holder object, or an item of a container at most this far.
_SEARCH_DEPTH = 3


@dataclass
class LoadedCode:
    """The modules of one instance's copy of the package and its handler."""

    alias: str
    handler: Handler
    modules: list[str] = field(default_factory=list)


def load_instance(spec: FunctionSpec, instance_id: int) -> LoadedCode:
    """Import a fresh copy of the package as `_sg_<function>_<id>` and return its handler."""
    alias = f"_sg_{spec.name.replace('-', '_')}_{instance_id}"
    package_dir = spec.code_dir / spec.package
    module_spec = importlib.util.spec_from_file_location(
        alias, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load package {spec.package!r} from {package_dir}")
    package = importlib.util.module_from_spec(module_spec)
    sys.modules[alias] = package
    try:
        module_spec.loader.exec_module(package)
        module = importlib.import_module(f"{alias}.{spec.module_path}")
        handler = getattr(module, spec.attribute, None)
        if not callable(handler):
            raise AttributeError(
                f"handler {spec.handler!r}: module {spec.package}.{spec.module_path} has no "
                f"callable {spec.attribute!r}"
            )
    except BaseException:
        unload(alias)
        raise
    # list() copies the keys in one step: other instances import at the same time.
    modules = [name for name in list(sys.modules) if name == alias or name.startswith(alias + ".")]
    return LoadedCode(alias=alias, handler=handler, modules=modules)


def unload(alias: str) -> list[ModuleType]:
    """Forget every module of one copy; returns them so the caller can inspect their state."""
    names = [name for name in list(sys.modules) if name == alias or name.startswith(alias + ".")]
    return [module for name in names if (module := sys.modules.pop(name, None)) is not None]


def discard(code: LoadedCode) -> int:
    """Drop an instance the way a reaped sandbox disappears; returns the sockets it cut.

    On AWS a reaped sandbox sends nothing: no PostgreSQL Terminate message, the server or pooler
    finds out later. Here the instance lives in a process that keeps running, so its sockets must
    be closed or every reap would leak a file descriptor. We do the closest thing: shut the socket
    down at the TCP level first (the peer sees an abrupt end of stream, as after a crash, never a
    polite protocol goodbye), then let the client library release the descriptor.
    """
    modules = unload(code.alias)
    cut = 0
    for obj in _reachable(modules):
        if _is_psycopg_connection(obj):
            cut += _cut_psycopg(obj)
        elif isinstance(obj, socket.socket) and obj.fileno() >= 0:
            _shutdown_fd(obj.fileno())
            obj.close()
            cut += 1
    return cut


def _reachable(modules: list[ModuleType]) -> Iterator[object]:
    # Hand-written walk: gc.get_referrers-style searches would scan the whole heap on every reap;
    # this looks only where functions keep connections (globals, holders, caches).
    seen: set[int] = set()
    frontier: list[tuple[object, int]] = [(vars(module), 0) for module in modules]
    while frontier:
        obj, depth = frontier.pop()
        if id(obj) in seen or isinstance(obj, ModuleType | type | str | bytes | int | float):
            continue
        seen.add(id(obj))
        yield obj
        if depth >= _SEARCH_DEPTH or (callable(obj) and not hasattr(obj, "__dict__")):
            continue
        children: list[object] = []
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            children = list(obj)
        elif hasattr(obj, "__dict__") and not callable(obj):
            children = list(vars(obj).values())
        frontier.extend((child, depth + 1) for child in children)


def _is_psycopg_connection(obj: object) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(obj, psycopg.BaseConnection)


def _cut_psycopg(conn: Any) -> int:
    if conn.closed:
        return 0
    try:
        fd = conn.pgconn.socket
    except Exception:
        fd = -1
    if fd >= 0:
        _shutdown_fd(fd)
    # libpq's Terminate message now goes nowhere; close() only frees the descriptor.
    conn.close()
    return 1 if fd >= 0 else 0


def _shutdown_fd(fd: int) -> None:
    # A dup so the owner's descriptor number stays valid until the owner closes it.
    dup = os.dup(fd)
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
