# The uv workspace (root pyproject.toml): the shared library and one member per process, each
# declaring only what it imports. deptry checks every member on its own: an import of a package
# the member does not declare (even one installed as somebody else's dependency) fails.

WORKSPACE_MEMBERS := src services/api services/consumer services/worker operator

.PHONY: deps-check
deps-check: install ## each workspace member declares every package it imports (deptry)
	@set -e; for member in $(WORKSPACE_MEMBERS); do \
		echo "deptry $$member"; \
		(cd $$member && $(RUN) deptry --no-ansi .); \
	done
CHECKS += deps-check
