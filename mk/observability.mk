# Observability: Prometheus rules, their unit tests and the Grafana dashboards (observability/),
# checked with Debian's `prometheus` package (promtool, and the prometheus binary that
# tests/observability runs end to end). See docs/observability.md.

PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),/usr/bin/promtool)
PROMETHEUS ?= $(or $(shell command -v prometheus 2>/dev/null),/usr/bin/prometheus)
RULE_FILES := $(wildcard observability/prometheus/*.rules.yaml)
RULE_TESTS := $(wildcard observability/prometheus/tests/*.yaml)

# Runs only when one of the two is missing. In a container the package's service start is
# refused (policy-rc.d, no systemd) or fails; that is harmless, so the install only counts as
# failed when the binaries are missing afterwards.
$(PROMTOOL) $(PROMETHEUS) &:
	@sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo"; fi; \
	policy=/usr/sbin/policy-rc.d; added_policy=""; \
	if [ -z "$$sudo" ] && [ ! -e "$$policy" ]; then \
		printf '#!/bin/sh\nexit 101\n' > "$$policy" && chmod 0755 "$$policy" && added_policy=1; \
	fi; \
	$$sudo apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends prometheus \
		|| echo "prometheus: apt-get reported an error (a refused service start is expected in containers)"; \
	if [ -n "$$added_policy" ]; then rm -f "$$policy"; fi; \
	command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
		|| { echo "prometheus: promtool/prometheus still missing"; exit 1; }; \
	promtool --version | head -1
TEST_TOOLS += $(PROMTOOL) $(PROMETHEUS)
SUITE_TOOLS += tests/observability:$(PROMTOOL) tests/observability:$(PROMETHEUS)
# The node suite runs a Prometheus in front of a release (tests/e2e/node/monitoring.py).
SUITE_TOOLS += tests/e2e/node:$(PROMETHEUS)

# Only what no test runs: the dashboards' checker runs in tests/observability (test_catalog.py)
# and mypy covers it through the tests that import it.
.PHONY: observability-check
observability-check: $(PROMTOOL) ## promtool check and unit-test the Prometheus rules
	$(PROMTOOL) check rules $(RULE_FILES)
	$(PROMTOOL) test rules $(RULE_TESTS)
CHECKS += observability-check
