# The two commands that matter: `make run` (start the system) and `make test` (check everything).
# `make help` lists the everyday targets first; the others are steps of those, usable on their own.
# Tools are installed by the targets that need them (prerequisites naming the installed files).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
UV_BIN := $(TOOLS)/uv/bin/uv
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_BIN))
RUN := $(UV) run --frozen
export UV_PYTHON ?= 3.11

# Feature makefiles (mk/*.mk) add their own targets and hook into `make test` by appending to:
#   CHECKS        - targets run after lint/typecheck, before pytest: only checks no test runs
#                   (a check with a test proving it fails belongs in the tests, so it runs once)
#   TEST_TOOLS    - prerequisites installing the tools the tests need (helm, promtool, ...)
#   SUITE_TOOLS   - the same, as "<test path>:<prerequisite>" pairs: which suite needs which
#   TYPED_SCRIPTS - scripts outside the packages that `make typecheck` also checks
CHECKS :=
TEST_TOOLS :=
SUITE_TOOLS :=
TYPED_SCRIPTS :=
# What `make help` lists first, in this order; wherever they are defined.
EVERYDAY := run test services stack bench manifests images cluster cluster-down check fmt
-include mk/*.mk

.PHONY: help
help: ## list the targets, everyday ones first
	@awk -F':.*## ' -v everyday="$(EVERYDAY)" ' \
		/^[a-z0-9-]+:.*## / { doc[$$1] = $$2; order[++n] = $$1 } \
		END { \
			print "Everyday:"; count = split(everyday, first, " "); \
			for (i = 1; i <= count; i++) if (first[i] in doc) { \
				printf "  %-20s %s\n", first[i], doc[first[i]]; shown[first[i]] = 1 } \
			print "\nOther targets:"; \
			for (i = 1; i <= n; i++) if (!(order[i] in shown)) printf "  %-20s %s\n", order[i], doc[order[i]] \
		}' $(MAKEFILE_LIST)

$(UV_BIN):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv

# eval "$(make -s env)": the project's uv, helm, kubectl and commands first on PATH in this shell.
.PHONY: env
env: ## print shell exports putting the project's tools on PATH: eval "$$(make -s env)"
	@echo 'export PATH="$(TOOLS)/bin:$(TOOLS)/uv/bin:$(CURDIR)/.venv/bin:$$PATH"'
	@if [ -f "$(CURDIR)/data/cluster/kubeconfig" ]; then echo 'export KUBECONFIG="$(CURDIR)/data/cluster/kubeconfig"'; fi

.PHONY: install
install: $(if $(shell command -v uv 2>/dev/null),,$(UV_BIN)) ## install the project and its development tools into .venv (from uv.lock)
	$(UV) sync --frozen

.PHONY: migrate
migrate: install ## apply database migrations to the configured database
	$(RUN) oms migrate

.PHONY: run
run: install migrate ## start the system (embedded SQLite + in-process pipeline unless configured)
	$(RUN) oms-api

.PHONY: services
services: ## make sure local PostgreSQL, Redis and RabbitMQ answer (starts them if not)
	./scripts/ensure-services.sh

.PHONY: lint
lint: install ## ruff lint and format check; import layers and no cycles (lint-imports)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

.PHONY: typecheck
typecheck: install ## mypy (strict): the packages and tests, then the scripts outside them
	$(RUN) mypy
	$(if $(TYPED_SCRIPTS),MYPYPATH=scripts $(RUN) mypy $(TYPED_SCRIPTS))

# T narrows the run, e.g. `make pytest T=tests/operator` or `T="tests/pipeline tests/e2e -x"`;
# then only the tools of the suites its paths name (or lie in) are installed first: none for
# tests/api, the cluster's for tests/cluster. Without a path under tests/, all of them.
T_PATHS := $(filter tests/%,$(T))
suite_of = $(firstword $(subst :, ,$(1)))
tool_of = $(word 2,$(subst :, ,$(1)))
path_in_suite = $(or $(filter $(call suite_of,$(1))%,$(2)),$(filter $(2)%,$(call suite_of,$(1))))
PYTEST_TOOLS := $(if $(T_PATHS),$(sort $(foreach pair,$(SUITE_TOOLS),$(foreach path,$(T_PATHS),\
	$(if $(call path_in_suite,$(pair),$(path)),$(call tool_of,$(pair)))))),$(TEST_TOOLS))

.PHONY: pytest
pytest: install services $(PYTEST_TOOLS) ## run the tests: all, or T="<paths and pytest options>"
	$(RUN) pytest $(T)

.PHONY: test
test: install services lint typecheck $(CHECKS) pytest ## lint, type-check and run every test

# The fast tier: lint, types and the tests that need nothing beyond the test process (no server,
# engine, cluster or fetched tool; `pytest -m fast`, tests/README.md). The three run side by side:
# mypy from a cold cache takes about as long as the tests.
.PHONY: check
check: ## lint, type-check and the fast tests (no servers, engine or cluster): under a minute
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck pytest-fast

.PHONY: pytest-fast
pytest-fast: install ## only the fast tests, or T="<paths and pytest options>" among them
	$(RUN) pytest -m fast $(T)

.PHONY: fmt
fmt: install ## fix what ruff can (ruff check --fix), then format (ruff format)
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

.PHONY: clean
clean: ## remove local state (data/, caches); keeps .venv and .tools
	rm -rf data .pytest_cache .mypy_cache .ruff_cache .hypothesis
