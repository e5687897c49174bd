"""The `slotguard` command: each sub-command lives in its own module under slotguard/commands."""

from __future__ import annotations

import typer

from slotguard.commands import budget as budget_command
from slotguard.commands import doctor as doctor_command

app = typer.Typer(
    name="slotguard",
    help="Connection-safe serverless PostgreSQL: budget, local target, storm and policy.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("doctor")(doctor_command.doctor)
app.command("budget")(budget_command.budget)


if __name__ == "__main__":
    app()
