# Tilt, the inner dev loop (`tilt up` with the Tiltfile; docs/kubernetes.md, "Development with
# Tilt"). Built from its Go module once per version into ~/.cache/oms like the node's tools
# (`cluster.py build tilt`, 6-10 minutes the first time) and put on the project's PATH
# (`eval "$(make -s env)"`) as .tools/bin/tilt: a launcher that keeps Tilt from reporting
# anything off this machine before it has read the Tiltfile (usage analytics, Tilt Cloud's
# status check, which it would otherwise make at every start).

TILT_VERSION := $(shell sed -n 's/^TILT_VERSION = "\(.*\)"/\1/p' scripts/localcluster/layout.py)
TILT_BUILT := $(CLUSTER_CACHE)/tilt/$(TILT_VERSION)/tilt
TILT := $(TOOLS)/bin/tilt
export TILT_BIN := $(TILT)
TYPED_SCRIPTS += scripts/tilt-build-args.py

$(TILT_BUILT): | install
	$(CLUSTER) build tilt

# Port 9 of loopback: nothing listens there (the node's containerd is sent to the same place).
# The launcher needs no binary to be written: the test run builds Tilt in the background
# (BACKGROUND_TOOLS, mk/cluster.mk, after the node's tools) and waits for it before Tilt's tests,
# which run last (tests/ordering.py).
# It names the version's path: a bump (layout.py) rewrites it.
$(TILT): mk/tilt.mk scripts/localcluster/layout.py
	@mkdir -p $(dir $@)
	@printf '%s\n' '#!/bin/sh' \
		'# Tilt $(TILT_VERSION) as built by `make tilt` (mk/tilt.mk): nothing reported off this machine.' \
		'export TILT_DISABLE_ANALYTICS=1 TILT_CLOUD_ADDRESS=localhost:9' \
		'exec "$(TILT_BUILT)" "$$@"' >$@.tmp
	@chmod +x $@.tmp && mv $@.tmp $@
	@echo "tilt $(TILT_VERSION): $@"

.PHONY: tilt
tilt: $(TILT_BUILT) $(TILT) ## build Tilt (once, cached) and put it on the project's PATH: .tools/bin/tilt

TEST_TOOLS += $(TILT)
SUITE_TOOLS += tests/e2e/node:$(TILT)
BACKGROUND_TOOLS += tilt
