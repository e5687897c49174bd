"""The figures docs/functions.md quotes, generated from the budget so they cannot drift.

"A function" shows what `slotguard budget` says about the `dev` stack plus an example function:
the figures and the refusals are computed here from `Pulumi.dev.yaml` and `infra/budget.py`, and
a test fails when the page is stale (`make docs` rewrites it).
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

from infra.budget import BOOTSTRAP_RESERVED_CONCURRENCY, BudgetError, compute_budget
from infra.settings import FunctionSettings, StackSettings, load_stack

KIT_ROOT = Path(__file__).resolve().parents[1]
START = "<!-- function-example:start -->"
END = "<!-- function-example:end -->"
README_START = "<!-- broken-pool-example:start -->"
README_END = "<!-- broken-pool-example:end -->"
BROKEN_POOL_SIZE = 40
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
    parts = " + ".join(
        f"{name} {fn.reserved_concurrency:,}"
        if fn.reserved_concurrency is not None
        else f"{name} unreserved"
        for name, fn in dev.functions.items()
    )
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
    others = sum(f.reserved_concurrency or 0 for f in dev.functions.values())
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


def render_broken_pool(root: Path = KIT_ROOT) -> str:
    """The README's refusal: the `dev` stack with a pool too big for its database."""
    dev = load_stack("dev", root)
    pgbouncer = dev.pooler.pgbouncer.model_copy(update={"pool_size": BROKEN_POOL_SIZE})
    broken = dev.model_copy(
        update={"pooler": dev.pooler.model_copy(update={"pgbouncer": pgbouncer})}
    )
    wrapped = textwrap.wrap(
        _refusal(broken), width=96, initial_indent="  - ", subsequent_indent="    "
    )
    return "\n".join(
        [
            "```console",
            "$ uv run slotguard budget --stack broken",
            "stack 'broken': the budget does not hold",
            *wrapped,
            "```",
        ]
    )


def _replace(page: Path, start: str, end: str, content: str) -> bool:
    text = page.read_text()
    block = f"{start}\n{content}\n{end}"
    new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    if new != text:
        page.write_text(new)
        return True
    return False


def update(root: Path = KIT_ROOT) -> bool:
    """Rewrite the generated blocks of docs/functions.md and the README; True if one changed."""
    functions = _replace(root / "docs" / "functions.md", START, END, render(root))
    readme = _replace(root / "README.md", README_START, README_END, render_broken_pool(root))
    return functions or readme


if __name__ == "__main__":
    update()
