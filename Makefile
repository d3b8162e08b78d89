# Fondation Worker: the two commands are `make deploy` and `make test`; the rest are parts.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAGE := scripts/stage.sh
LANE := $(STAGE) run
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help test lint pytest pytest-fast convex-test molecule deploy clean-local \
        engine images image deps clean bench chaos chaos-short flake monitoring dashboard \
        claude-cli-bump

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- toolchains: (re)built only when their lock inputs change ----------------------------
$(VENV)/.stamp: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Python >= 3.11 is required (PYTHON=$(PYTHON))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# --no-compile: pip byte-compiled all 20,000 files of ansible's collections (half of its
	@# 115 s here); Python compiles the few modules a run imports when it first imports them.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev]'
	@touch $@

node_modules/.stamp: package.json package-lock.json
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' \
	  || { echo "Node.js >= 20 is required"; exit 1; }
	@# `npm ci`: exactly the lock, which it never rewrites (`npm install` completed a lock
	@# missing an optional entry, and a fresh clone's tree was dirty after `make deps`).
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(VENV)/.stamp node_modules/.stamp ## install the Python venv and node_modules

engine: ## make sure a Docker engine runs (installs and starts one when root on Debian)
	@scripts/docker-engine.sh

images: engine ## base images: Debian 12/13, their systemd flavour, and Debian 12 with Docker (cached)
	@scripts/base-image.sh all

image: deps ## build the worker image and its registry-less archive (build/images/)
	scripts/build-image.sh

# --- checks ------------------------------------------------------------------------------
# The tree is compared with its state before anything ran (a fresh clone: git status empty)
# after `make deps` and at the end; the deploy stage is a newcomer's `make deploy`, twice.
test: ## every check: lint, Convex tests, a newcomer's make deploy, short chaos, Python tests, Molecule
	@$(STAGE) reset
	@scripts/clean-tree.sh snapshot
	@# The venv and node_modules side by side (pip is one busy core, npm mostly waits).
	@$(STAGE) run deps $(MAKE) --no-print-directory -j2 deps
	@$(STAGE) run tree-deps scripts/clean-tree.sh check "make deps"
	@$(STAGE) run engine scripts/docker-engine.sh
	@$(STAGE) run images scripts/base-image.sh all
	@# Three lanes side by side, so the two cores stay busy from here to the end: Molecule,
	@# the longest stage, starts as soon as the image exists; the deploy waits for that image;
	@# the other lanes' stages need nothing from one another. Each stage is timed alone.
	@$(STAGE) lanes \
	  "$(LANE) image scripts/build-image.sh \
	    && $(LANE) molecule $(MAKE) --no-print-directory molecule" \
	  "$(LANE) lint $(MAKE) --no-print-directory lint && $(STAGE) await image \
	    && $(LANE) deploy scripts/first-deploy-check.sh \
	    && $(LANE) chaos-short $(MAKE) --no-print-directory chaos-short \
	    && $(LANE) pytest $(MAKE) --no-print-directory pytest" \
	  "$(LANE) convex-test $(MAKE) --no-print-directory convex-test \
	    && $(LANE) monitoring $(MAKE) --no-print-directory monitoring"
	@$(STAGE) run tree scripts/clean-tree.sh check "make test"
	@$(STAGE) summary

lint: deps ## ruff, mypy --strict, yamllint, ansible-lint (production), tsc
	ruff check worker tests molecule bench scripts chaos plugins roles/fondation_worker/files monitoring
	ruff format --check worker tests molecule bench scripts chaos plugins roles/fondation_worker/files monitoring
	mypy
	yamllint --strict .
	ansible-lint
	@if [ -f convex/tsconfig.json ]; then tsc --noEmit -p convex; fi
	@if [ -f devbackend/tsconfig.json ]; then tsc --noEmit -p devbackend; fi
	@if [ -f tests/convex/tsconfig.json ]; then tsc --noEmit -p tests/convex; fi

pytest: deps ## every pytest suite under tests/, the real-CLI ones with the pinned binary
	REAL_CLAUDE_BIN=$$(scripts/claude-cli.sh binary) pytest tests

# The markers (pyproject.toml) name what a suite needs: the dev backend, Docker, the pinned
# CLI, or minutes of ansible-playbook. Without them: the in-process suites, in seconds.
PYTEST_SLOW := integration or docker or real_cli or slow
pytest-fast: deps ## the in-process pytest suites only (no dev backend, Docker, real CLI, Ansible)
	pytest tests -m "not ($(PYTEST_SLOW))"

convex-test: deps ## the Convex functions under convex-test (vitest)
	vitest run

# promtool comes from Debian's prometheus package (installed when root on Debian); the
# scrape-and-fire test with a real Prometheus is a pytest suite (tests/monitoring).
monitoring: deps ## alert rules (promtool check + unit tests) and the dashboard's metric names
	scripts/monitoring.sh check
	pytest -q tests/monitoring -m "not integration"

dashboard: deps ## regenerate the fleet dashboard JSON (monitoring/dashboards/) from monitoring/dashboard.py
	scripts/monitoring.sh dashboard

# Resolve a Claude CLI version (the registry's latest by default), rebuild the image with it
# and run the real-CLI suites; worker/claude-cli.lock keeps the new pin only if they pass.
claude-cli-bump: deps ## pin a new Claude CLI: make claude-cli-bump [VERSION=2.1.337]
	scripts/claude-cli-bump.sh $(VERSION)

# The end-to-end checks need the dev backend; scripts/molecule.sh runs one of their own.
molecule: deps images image ## the Molecule scenarios (Debian 12 and 13 systemd hosts, DinD)
	scripts/molecule.sh

# Pin a flaky check down: repeat one Molecule scenario or one pytest node N times.
N ?= 5
flake: deps images image ## repeat a check: SCENARIO=runbooks N=5, or TEST=tests/x.py::test_y N=10
	@if [ -n "$(SCENARIO)" ]; then scripts/flake.sh scenario "$(SCENARIO)" $(N); \
	elif [ -n "$(TEST)" ]; then scripts/flake.sh pytest "$(TEST)" $(N); \
	else echo "make flake SCENARIO=<molecule scenario> N=5, or TEST=<pytest node> N=10"; exit 2; fi

# --- the embedded default target ---------------------------------------------------------
# The dev backend runs with fixed public test tokens (scripts/devbackend.sh): the worker's in
# inventories/local, the operator's for demo_job.py (enqueue and jobs:get are operator calls).
deploy: deps images image ## deploy the stack to the local Debian systemd container, then run a job
	scripts/local-deploy.sh

# --- the performance report --------------------------------------------------------------
bench: deps images image ## performance report: one table of figures vs targets (bench/results.md)
	python -m bench.report

# --- the chaos suite (chaos/): real worker containers under faults ----------------------
JOBS ?= 200
WORKERS ?= 3
DURATION ?= 420
SEED ?= 1
chaos: deps image ## chaos run: JOBS=200 WORKERS=3 DURATION=420 SEED=1 -> build/chaos/<run>/
	python -m chaos.run --jobs $(JOBS) --workers $(WORKERS) --duration $(DURATION) --seed $(SEED) \
	  --out build/chaos

chaos-short: deps ## the short chaos run of `make test`: 60 jobs, 3 workers, every fault once
	python -m chaos.run --jobs 60 --workers 3 --duration 150 --seed $(SEED) --out build/chaos \
	  --name short

clean-local: ## remove the local target container, its volume, the dev backend and the demo stand-ins
	@scripts/local-target.sh down
	@scripts/devbackend.sh stop
	@scripts/demo-standins.sh stop

clean: clean-local ## remove local state: venv, node_modules, build output
	rm -rf $(VENV) node_modules build .ansible
