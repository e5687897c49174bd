"""Raises, so the runtime answers with Lambda's function-error document."""

from __future__ import annotations

from typing import Any


class OrderRejectedError(Exception):
    pass


def _check(event: Any) -> None:
    raise OrderRejectedError(f"order {event.get('order')} rejected")


def handler(event: Any, context: Any) -> None:
    _check(event)
