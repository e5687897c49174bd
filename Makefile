# Thin entry points; the logic lives in the `slotguard` tool and the tests.
STACK ?= dev
RUN := uv run --frozen

.PHONY: setup up down status storm test lint bench drills budget policy check docs

setup:
	@STACK=$(STACK) bash scripts/setup.sh

## The local target: bring the stack up, show it working with a short burst.
BURST ?= 300
up: setup
	$(RUN) slotguard up --stack $(STACK)
	$(RUN) slotguard storm --stack $(STACK) --wiring pooled --burst $(BURST) --check

down:
	$(RUN) slotguard down --stack $(STACK)

status:
	$(RUN) slotguard status --stack $(STACK)

## Burst the running stack: pooled, direct and naive side by side (JSON and chart under build/).
storm:
	$(RUN) slotguard storm --stack $(STACK) --burst 1000 --wiring all \
		--json build/storm/storm.json --chart build/storm/storm.png

## The benchmarks of the local target (minutes): figures, build/bench/*.json, docs/benchmarks.md.
bench: setup
	$(RUN) python -m slotguard.bench --stack $(STACK)

## Fault drills (each under a minute; frozen-wave waits for the pooler to reap): every drill in
## turn against the stack, brought up if needed; figures in build/drills/drills.json. Then the
## workloads drill against the `workloads` stack (up, drill, down): build/drills/workloads.json.
drills: setup
	$(RUN) slotguard drill all --stack $(STACK) --up --json build/drills/drills.json
	$(RUN) slotguard drill workloads --stack workloads --up --json build/drills/workloads.json; \
	status=$$?; $(RUN) slotguard down --stack workloads; exit $$status

budget: setup
	$(RUN) slotguard budget --stack $(STACK)

## The policy pack, offline: the stack's program under Pulumi mocks, every rule applied.
policy: setup
	$(RUN) slotguard policy --stack $(STACK)

## Everything about one stack that can be checked offline: settings, budget, handlers, the
## program under Pulumi mocks and the policy pack (`make check STACK=<your stack>`).
check: setup
	$(RUN) slotguard check --stack $(STACK)

## Lint, type-check and run the test suite (installs everything it needs first), in random order
## (the seed is printed; `--randomly-seed=N` repeats it) on one worker per CPU, a test file per
## worker at a time (each file's shared servers start once), files marked heavy first (in the
## order tests/scheduling.py gives, hence no reordering by xdist). TEST_WORKERS=0: in-process.
TEST_WORKERS ?= auto
test: setup lint
	$(RUN) pytest -m "not bench" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## mypy's cache lives beside the PgBouncer build, so a fresh clone on the same machine checks only
## what changed (mypy validates each cached module by its source's hash, whatever the path).
MYPY_CACHE_DIR ?= $(or $(SLOTGUARD_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/slotguard)/mypy
lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	MYPY_CACHE_DIR=$(MYPY_CACHE_DIR) $(RUN) mypy
	$(RUN) zizmor --offline --config .github/zizmor.yml .github/workflows

docs:
	$(RUN) python -m slotguard.settings_reference
	$(RUN) python -m slotguard.docs_figures
