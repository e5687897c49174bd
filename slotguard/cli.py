"""The `slotguard` command: each sub-command lives in its own module under slotguard/commands."""

from __future__ import annotations

import typer

from slotguard.commands import budget as budget_command
from slotguard.commands import check as check_command
from slotguard.commands import doctor as doctor_command
from slotguard.commands import drill as drill_command
from slotguard.commands import local as local_command
from slotguard.commands import policy as policy_command
from slotguard.commands import preflight as preflight_command
from slotguard.commands import storm as storm_command
from slotguard.commands import verify as verify_command

app = typer.Typer(
    name="slotguard",
    help="Connection-safe serverless PostgreSQL: budget, local target, storm and policy.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("doctor")(doctor_command.doctor)
app.command("budget")(budget_command.budget)
app.command("policy")(policy_command.policy)
app.command("check")(check_command.check)
app.command("up")(local_command.up_command)
app.command("down")(local_command.down_command)
app.command("status")(local_command.status_command)
app.command("storm")(storm_command.storm)
app.command("drill")(drill_command.drill)
app.command("preflight")(preflight_command.preflight)
app.command("verify")(verify_command.verify)


if __name__ == "__main__":
    app()
