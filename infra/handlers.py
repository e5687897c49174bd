"""Every function's handler exists in what will be packaged, checked before anything deploys.

A handler typo (`functions.order.handler` for module `orders`) would otherwise pass the budget,
the policy pack and the preview and fail only at the first invocation with
`Runtime.ImportModuleError`. The check reads the packaged files (the same list the zip is built
from) and parses each module's syntax tree for a top-level definition: nothing is imported, so a
handler's import-time side effects cannot run here.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

from infra.budget import BudgetError, Violation
from infra.packaging import FUNCTIONS_DIR, source_files
from infra.settings import StackSettings


class HandlerError(BudgetError):
    """A function's handler is not in the package; each violation names the setting."""


def _module_files(source_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every Python module the zip will hold."""
    modules: dict[str, Path] = {}
    for arcname, path in source_files(source_dir):
        if not arcname.endswith(".py"):
            continue
        parts = arcname.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def top_level_names(path: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _syntax_error(path: Path) -> str | None:
    try:
        ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        return f"{error.msg} (line {error.lineno})"
    return None


def handler_problems(settings: StackSettings, source_dir: Path = FUNCTIONS_DIR) -> list[Violation]:
    """One violation per function whose `module.function` is not in the packaged files."""
    modules = _module_files(source_dir)
    package = source_dir.name
    out: list[Violation] = []
    for name, fn in sorted(settings.functions.items()):
        module, _, attribute = fn.handler.rpartition(".")
        setting = f"functions.{name}.handler"
        path = modules.get(module)
        if path is None:
            candidates = [
                m
                for m, p in modules.items()
                if m.startswith(f"{package}.") and attribute in top_level_names(p)
            ]
            close = difflib.get_close_matches(module, candidates, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}.{attribute}?" if close else ""
            out.append(
                Violation(
                    setting,
                    f"{fn.handler}: no module {module} in the packaged {package}/ directory{hint}",
                )
            )
            continue
        broken = _syntax_error(path)
        if broken is not None:
            out.append(Violation(setting, f"{fn.handler}: {path.name} does not parse: {broken}"))
            continue
        names = top_level_names(path)
        if attribute not in names:
            close = difflib.get_close_matches(attribute, sorted(names), n=1, cutoff=0.6)
            hint = f"; did you mean {module}.{close[0]}?" if close else ""
            out.append(
                Violation(
                    setting,
                    f"{fn.handler}: {path.name} defines no top-level {attribute}{hint}",
                )
            )
    return out


def check_handlers(settings: StackSettings, source_dir: Path = FUNCTIONS_DIR) -> None:
    """Raise `HandlerError` naming each function whose handler would not import on Lambda."""
    problems = handler_problems(settings, source_dir)
    if problems:
        raise HandlerError(problems)
