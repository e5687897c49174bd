"""The README's promises: the two set-up commands, the CI hook, and a current settings reference."""

from __future__ import annotations

import re
from pathlib import Path

from slotguard.settings_reference import END, START, render

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make up" in first_screen
    assert "make test" in first_screen


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: setup", makefile, re.M), "make test must install what it needs"


def test_settings_reference_is_current():
    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "README settings reference is stale: run `make docs`"
