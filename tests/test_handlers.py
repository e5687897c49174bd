"""A handler typo is refused before deploy, with the name it probably meant (infra/handlers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.handlers import HandlerError, check_handlers, handler_problems, top_level_names
from infra.settings import FunctionSettings, StackSettings
from policy.offline import check_stack
from slotguard.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def stack_with(**handlers: str) -> StackSettings:
    return StackSettings(
        functions={name: FunctionSettings(handler=h) for name, h in handlers.items()}
    )


@pytest.fixture
def team_package(tmp_path: Path) -> Path:
    """A fork's own functions package: `orders` defines a handler, `users` only a helper."""
    package = tmp_path / "functions"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "orders.py").write_text(
        "import json\n\n\ndef handler(event, context):\n    return {'statusCode': 200}\n"
    )
    (package / "users.py").write_text("def handle(event, context):\n    return None\n")
    (package / "reports").mkdir()
    (package / "reports" / "__init__.py").write_text("handler = print\n")
    (package / "broken.py").write_text("def handler(:\n")
    return package


def test_existing_handlers_pass(team_package: Path) -> None:
    settings = stack_with(orders="functions.orders.handler", reports="functions.reports.handler")
    assert handler_problems(settings, team_package) == []


def test_a_module_typo_names_the_module_it_meant(team_package: Path) -> None:
    (problem,) = handler_problems(stack_with(orders="functions.order.handler"), team_package)
    assert problem.setting == "functions.orders.handler"
    assert "no module functions.order in the packaged functions/ directory" in problem.message
    assert problem.message.endswith("did you mean functions.orders.handler?")


def test_a_module_without_the_function_says_so(team_package: Path) -> None:
    (problem,) = handler_problems(stack_with(users="functions.users.handler"), team_package)
    assert problem.message == (
        "functions.users.handler: users.py defines no top-level handler; "
        "did you mean functions.users.handle?"
    )


def test_a_module_that_does_not_parse_is_named(team_package: Path) -> None:
    (problem,) = handler_problems(stack_with(broken="functions.broken.handler"), team_package)
    assert "broken.py does not parse" in problem.message


def test_nothing_is_imported(team_package: Path) -> None:
    # A side effect at import time would run if the check imported the module.
    marker = team_package.parent / "imported"
    (team_package / "orders.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef handler(event, context):\n    return 1\n"
    )
    check_handlers(stack_with(orders="functions.orders.handler"), team_package)
    assert not marker.exists()
    assert "handler" in top_level_names(team_package / "orders.py")


def _typo_project(tmp_path: Path) -> Path:
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    # The kit's own health function (a fork may remove the example API, not this one).
    document["config"]["slotguard:functions"]["health"]["handler"] = "functions.helth.handler"
    (tmp_path / "Pulumi.typo.yaml").write_text(yaml.safe_dump(document))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


def test_budget_refuses_a_handler_typo(tmp_path: Path) -> None:
    root = _typo_project(tmp_path)
    result = runner.invoke(app, ["budget", "--stack", "typo", "--project-dir", str(root)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "stack 'typo': a handler is not in the package" in text
    assert "functions.health.handler: functions.helth.handler: no module functions.helth" in text
    assert "did you mean functions.health.handler?" in text


def test_the_policy_pack_and_the_preview_refuse_it(tmp_path: Path) -> None:
    with pytest.raises(HandlerError) as caught:
        check_stack("typo", _typo_project(tmp_path))
    assert caught.value.violations[0].setting == "functions.health.handler"
    main = (ROOT / "infra" / "__main__.py").read_text()
    assert "check_handlers(settings)" in main  # the program checks before building anything
