"""The figures docs/functions.md quotes, generated from the budget so they cannot drift.

"A function" shows what `slotguard budget` says about the `dev` stack plus an example function:
the figures and the refusals are computed here from `Pulumi.dev.yaml` and `infra/budget.py`, and
a test fails when the page is stale (`make docs` rewrites it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from infra.budget import BOOTSTRAP_RESERVED_CONCURRENCY, BudgetError, compute_budget
from infra.settings import FunctionSettings, StackSettings, load_stack

KIT_ROOT = Path(__file__).resolve().parents[1]
START = "<!-- function-example:start -->"
END = "<!-- function-example:end -->"
EXAMPLE = "stock"
EXAMPLE_RESERVED = 50
EXAMPLE_QUOTA = 1200
SHOWN = (
    "functions.reserved_concurrency",
    f"functions.{EXAMPLE}.worst_connect",
    f"functions.{EXAMPLE}.worst_query",
)


def _with_example(
    dev: StackSettings, *, reserved: int = EXAMPLE_RESERVED, timeout_s: int = 15
) -> StackSettings:
    example = FunctionSettings(
        handler=f"functions.{EXAMPLE}.handler",
        reserved_concurrency=reserved,
        timeout_s=timeout_s,
    )
    return dev.model_copy(
        update={
            "lambda_concurrency_quota": EXAMPLE_QUOTA,
            "functions": {**dev.functions, EXAMPLE: example},
        }
    )


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _refusal(settings: StackSettings) -> str:
    try:
        compute_budget(settings)
    except BudgetError as error:
        return str(error.violations[0])
    raise AssertionError("the example was meant to be refused")


def render(root: Path = KIT_ROOT) -> str:
    """The generated part of docs/functions.md's "A function"."""
    dev = load_stack("dev", root)
    budget = compute_budget(_with_example(dev))
    parts = " + ".join(f"{name} {fn.reserved_concurrency:,}" for name, fn in dev.functions.items())
    lines = [
        f"A stack made of the `dev` example ({parts}, bootstrap "
        f"{BOOTSTRAP_RESERVED_CONCURRENCY}) with `lambda_concurrency_quota: {EXAMPLE_QUOTA}` plus "
        f"`{EXAMPLE}` above gets, among others:",
        "",
        "| figure | value | from | limit | headroom |",
        "|---|---|---|---|---|",
    ]
    for figure in budget.figures:
        if figure.key in SHOWN:
            limit = f"{_number(figure.limit)} ({figure.limit_source})" if figure.limit else ""
            headroom = _number(figure.headroom) if figure.headroom is not None else ""
            lines.append(
                f"| `{figure.key}` | {_number(figure.value)} {figure.unit} | {figure.source} | "
                f"{limit} | {headroom} |"
            )
    reservable = EXAMPLE_QUOTA - 100
    others = sum(f.reserved_concurrency for f in dev.functions.values())
    too_many = math.ceil((reservable - others - BOOTSTRAP_RESERVED_CONCURRENCY + 1) / 50) * 50
    slow = _with_example(dev, timeout_s=int(budget.functions[EXAMPLE].worst_query_s) - 1)
    lines += [
        "",
        "and what would not work is refused with the setting to change (exit status 2), here "
        f"with `reserved_concurrency: {too_many}`:",
        "",
        "```console",
        "stack 'team': the budget does not hold",
        f"  - {_refusal(_with_example(dev, reserved=too_many))}",
        "```",
        "",
        f"or with `timeout_s: {slow.functions[EXAMPLE].timeout_s}`: `{_refusal(slow)}`.",
    ]
    return "\n".join(lines)


def update(page: Path = KIT_ROOT / "docs" / "functions.md") -> bool:
    """Rewrite the generated block of the page; True if it changed."""
    text = page.read_text()
    block = f"{START}\n{render()}\n{END}"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if new != text:
        page.write_text(new)
        return True
    return False


if __name__ == "__main__":
    update()
