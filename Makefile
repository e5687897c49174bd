# Thin entry points; the logic lives in the `slotguard` tool and the tests.
STACK ?= dev
RUN := uv run --frozen

.PHONY: setup up down status storm test lint bench drills budget policy docs

setup:
	@bash scripts/setup.sh

## The local target: bring the stack up, show it working with a short burst.
up: setup
	$(RUN) slotguard budget --stack $(STACK)

down:
	$(RUN) slotguard down --stack $(STACK)

status:
	$(RUN) slotguard status --stack $(STACK)

budget: setup
	$(RUN) slotguard budget --stack $(STACK)

## The policy pack, offline: the stack's program under Pulumi mocks, every rule applied.
policy: setup
	$(RUN) slotguard policy --stack $(STACK)

## Lint, type-check and run the test suite (installs everything it needs first).
test: setup lint
	$(RUN) pytest -m "not bench"

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

docs:
	$(RUN) python -m slotguard.settings_reference
