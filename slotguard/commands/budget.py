"""`slotguard budget`: placeholder until the budget module lands."""

from __future__ import annotations


def budget(stack: str = "dev") -> None:
    """Show the connection budget of a stack."""
    raise NotImplementedError(stack)
