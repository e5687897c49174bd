"""One check's result, and the table both `slotguard preflight` and `slotguard verify` print.

A check that cannot run (an API error, a missing permission) is itself a failed row naming what
to fix, never a traceback: the command exists to show such conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.table import Table
from rich.text import Text


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check result, not a password
    FAIL = "fail"
    SKIP = "skip"  # does not apply to this stack (e.g. existing-VPC checks on a new VPC)


@dataclass(frozen=True)
class Check:
    """One row: what was checked, what was found, and what to change when it failed."""

    name: str
    status: Status
    found: str
    change: str = ""

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL


def passed(name: str, found: str) -> Check:
    return Check(name, Status.PASS, found)


def failed(name: str, found: str, change: str) -> Check:
    return Check(name, Status.FAIL, found, change)


def skipped(name: str, why: str) -> Check:
    return Check(name, Status.SKIP, why)


CheckFn = Callable[[], Iterable[Check]]


class CheckError(RuntimeError):
    """A check that cannot go on: its message is what was found, `change` what to do."""

    def __init__(self, message: str, change: str = "") -> None:
        super().__init__(message)
        self.change = change


def api_error_text(error: Exception) -> str:
    """A one-line description of a boto error, with AWS's error code when there is one."""
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'error')}: {info.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


def run_checks(named: Iterable[tuple[str, CheckFn]]) -> list[Check]:
    """Run every check; an AWS error becomes that check's failed row, the others still run."""
    results: list[Check] = []
    for name, check in named:
        try:
            results.extend(check())
        except CheckError as error:
            results.append(failed(name, str(error), error.change))
        except NoCredentialsError as error:
            results.append(
                failed(
                    name,
                    f"the AWS call failed: {api_error_text(error)}",
                    "configure AWS credentials (aws configure, AWS_PROFILE or aws sso login)",
                )
            )
        except (ClientError, BotoCoreError) as error:
            results.append(
                failed(
                    name,
                    f"the AWS call failed: {api_error_text(error)}",
                    "fix the credentials' permissions or region named in the error, then rerun",
                )
            )
        except Exception as error:
            results.append(
                failed(name, f"the check could not run: {type(error).__name__}: {error}", "")
            )
    return results


STYLE = {Status.PASS: "green", Status.FAIL: "red bold", Status.SKIP: "dim"}


def render(checks: list[Check], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("check", style="bold")
    table.add_column("result")
    table.add_column("found")
    table.add_column("change")
    for check in checks:
        table.add_row(
            Text(check.name),
            f"[{STYLE[check.status]}]{check.status.value}[/]",
            Text(check.found),
            Text(check.change),
        )
    return table
