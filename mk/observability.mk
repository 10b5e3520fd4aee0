# Observability: Prometheus rules, their unit tests and the Grafana dashboards (observability/),
# checked with Debian's `prometheus` package (promtool, and the prometheus binary that
# tests/observability runs end to end). See docs/observability.md.

PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),/usr/bin/promtool)
RULE_FILES := $(wildcard observability/prometheus/*.rules.yaml)
RULE_TESTS := $(wildcard observability/prometheus/tests/*.yaml)

# Idempotent: nothing to do when both binaries exist. In a container the package's service
# start is refused (policy-rc.d, no systemd) or fails; that is harmless, so the install only
# counts as failed when the binaries are missing afterwards.
.PHONY: observability-tools
observability-tools: ## install promtool and prometheus (Debian package `prometheus`)
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then exit 0; fi; \
	sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo"; fi; \
	policy=/usr/sbin/policy-rc.d; added_policy=""; \
	if [ -z "$$sudo" ] && [ ! -e "$$policy" ]; then \
		printf '#!/bin/sh\nexit 101\n' > "$$policy" && chmod 0755 "$$policy" && added_policy=1; \
	fi; \
	$$sudo apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends prometheus \
		|| echo "observability-tools: apt-get reported an error (a refused service start is expected in containers)"; \
	if [ -n "$$added_policy" ]; then rm -f "$$policy"; fi; \
	command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
		|| { echo "observability-tools: promtool/prometheus still missing"; exit 1; }; \
	promtool --version | head -1
TEST_TOOLS += observability-tools

.PHONY: observability-check
observability-check: install observability-tools ## promtool check/test rules, dashboards (JSON, ids, PromQL)
	$(PROMTOOL) check rules $(RULE_FILES)
	$(PROMTOOL) test rules $(RULE_TESTS)
	$(RUN) mypy observability/check_dashboards.py
	$(RUN) python observability/check_dashboards.py --promtool $(PROMTOOL)
CHECKS += observability-check
