# The two commands that matter: `make run` (start the system) and `make test` (check everything).
# Every other target is a step of those two, usable on its own.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/uv/bin/uv)
RUN := $(UV) run --frozen
export UV_PYTHON ?= 3.11

# Feature makefiles (mk/*.mk) add their own targets and hook into `make test` by appending to:
#   CHECKS        - targets run after lint/typecheck, before pytest (e.g. helm lint)
#   TEST_TOOLS    - targets that install tools the tests need (helm, promtool, ...)
CHECKS :=
TEST_TOOLS :=
-include mk/*.mk

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(TOOLS)/uv/bin/uv:
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv

.PHONY: uv
uv: $(if $(shell command -v uv 2>/dev/null),,$(TOOLS)/uv/bin/uv)

.PHONY: install
install: uv ## install the project and its development tools into .venv (from uv.lock)
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
lint: install ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

.PHONY: typecheck
typecheck: install ## mypy (strict)
	$(RUN) mypy

.PHONY: pytest
pytest: install services $(TEST_TOOLS) ## run every test
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test
test: install services lint typecheck $(CHECKS) pytest ## lint, type-check and run every test

.PHONY: clean
clean: ## remove local state (data/, caches); keeps .venv and .tools
	rm -rf data .pytest_cache .mypy_cache .ruff_cache .hypothesis
