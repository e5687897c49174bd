"""The README's settings reference, generated from the settings models' own descriptions.

Generated rather than hand-written so the reference cannot drift from the defaults the code uses;
a test fails when the README is stale (`make docs` rewrites it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from infra.settings import FunctionSettings, StackSettings, WorkloadSettings

START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"
SKIP = {"stack", "region"}


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            return ", ".join(f"`{k}`" for k in value)
        return f"`{value!r}`" if value else "empty"
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "empty"
    value = field.default
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        if model is StackSettings and name in SKIP:
            continue
        annotation = field.annotation
        path = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{path}.")
            continue
        if model is StackSettings and name == "functions":
            rows.append(
                f"| `functions` | {_default(field)} | A map of named functions; "
                "each entry takes the keys below. |"
            )
            rows += _rows(FunctionSettings, "functions.<name>.")
            continue
        if model is StackSettings and name == "workloads":
            description = re.sub(r"\s+", " ", field.description or "")
            rows.append(f"| `workloads` | empty | {description} |")
            rows += _rows(WorkloadSettings, "workloads.<name>.")
            continue
        description = re.sub(r"\s+", " ", field.description or "")
        rows.append(f"| `{path}` | {_default(field)} | {description} |")
    return rows


def render() -> str:
    """The reference as a Markdown table (keys are under the `slotguard:` namespace)."""
    header = "| setting | default | what it is, and why that default |\n|---|---|---|"
    return "\n".join([header, *_rows(StackSettings, "")])


def update_readme(readme: Path) -> bool:
    """Rewrite the generated block of the README; True if it changed."""
    text = readme.read_text()
    block = f"{START}\n{render()}\n{END}"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if new != text:
        readme.write_text(new)
        return True
    return False


if __name__ == "__main__":
    update_readme(Path(__file__).resolve().parents[1] / "README.md")
