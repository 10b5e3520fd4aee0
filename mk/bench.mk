# `make bench`: throughput and latency of the API and the pipeline as ratios against baselines
# measured in the same run (bench/README.md). Not part of `make test`; its pure parts are tested
# in tests/bench. BENCH_ARGS passes options, e.g. BENCH_ARGS="--output bench/results/before.json".

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: bench-tools
bench-tools: ## install wrk (Debian package) unless present; pgbench comes with PostgreSQL's client
	@command -v wrk >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	@command -v pgbench >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-client >/dev/null; }
	@wrk --version 2>&1 | head -1; pgbench --version

.PHONY: bench
bench: install services bench-tools ## benchmark API + pipeline vs bare ASGI and pgbench (~3 min)
	$(RUN) python -m bench.run $(BENCH_ARGS)
