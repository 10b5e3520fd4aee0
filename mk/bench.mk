# `make bench`: throughput and latency of the API and the pipeline as ratios against baselines
# measured in the same run (bench/README.md). Not part of `make test`; its pure parts are tested
# in tests/bench. BENCH_ARGS passes options, e.g. BENCH_ARGS="--output bench/results/before.json".

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VEGETA_VERSION := v12.12.0
VEGETA := $(TOOLS)/bin/vegeta
VEGETA_STAMP := $(TOOLS)/bin/.vegeta-$(VEGETA_VERSION)

# vegeta (open-loop load at a fixed arrival rate), built from the Go module proxy into .tools/;
# Go's caches stay under .tools/go/ like the control plane's (mk/cluster.mk).
$(VEGETA_STAMP):
	@mkdir -p $(TOOLS)/bin $(TOOLS)/go
	GOPATH=$(TOOLS)/go GOMODCACHE=$(TOOLS)/go/mod GOCACHE=$(TOOLS)/go/cache GOFLAGS=-modcacherw \
	  GOBIN=$(TOOLS)/bin $(GO) install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)
	@touch $@

# wrk and pgbench (PostgreSQL's client) come from Debian packages unless present.
.PHONY: bench
bench: install services $(VEGETA_STAMP) ## benchmark API + pipeline vs bare ASGI and pgbench (~3 min)
	@command -v wrk >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	@command -v pgbench >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-client >/dev/null; }
	@wrk --version 2>&1 | head -1; pgbench --version; echo "vegeta $(VEGETA_VERSION)"
	$(RUN) python -m bench.run $(BENCH_ARGS)
