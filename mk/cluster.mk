# A one-node Kubernetes cluster on this machine (scripts/cluster.py): control plane, kubelet with
# containerd, bridge pod network, kube-proxy, CoreDNS, Traefik as the ingress controller and an
# image registry on loopback (what `tilt up` pushes to, mk/tilt.mk). Built from source once per
# version into ~/.cache/oms (OMS_CACHE_DIR), shared by every clone; state in data/cluster/. See
# docs/kubernetes.md ("The local cluster").

CLUSTER := $(RUN) python scripts/cluster.py
TYPED_SCRIPTS += scripts/cluster.py scripts/localcluster

# `cluster.py build` is a no-op when every binary of the pinned versions is in the cache; the
# stamp only saves starting Python. It names the versions, so a bump rebuilds.
CLUSTER_CACHE := $(or $(OMS_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/oms)
CLUSTER_TOOLS_STAMP := $(CLUSTER_CACHE)/.built-$(shell cat deploy/node/kubernetes/go.mod deploy/node/coredns/go.mod scripts/localcluster/layout.py 2>/dev/null | cksum | cut -d' ' -f1)
$(CLUSTER_TOOLS_STAMP): | install
	$(CLUSTER) build
	@mkdir -p $(dir $@) && touch $@
# The tests do not wait for these to compile (most of half an hour on a bare machine): the run
# starts them in the background at the lowest priority and goes on, tests/ordering.py runs the
# suites needing them last and waits for the build (`cluster.py build`, the cache's locks) first.
# Tests pointed at another cluster (OMS_E2E_KUBECONFIG, docs/kubernetes.md) need no node of ours.
BACKGROUND_TOOLS := $(if $(OMS_E2E_KUBECONFIG),,node)
.PHONY: tools-in-background
tools-in-background: | install
	@$(if $(strip $(BACKGROUND_TOOLS)),$(CLUSTER) build --background data/logs/tools-build.log $(BACKGROUND_TOOLS))
TEST_TOOLS += tools-in-background
SUITE_TOOLS += tests/images:tools-in-background tests/cluster:tools-in-background
SUITE_TOOLS += tests/e2e/node:tools-in-background

# kubectl and helm come along for using it; $$ defers their stamp's name, which mk/deploy.mk (read
# after this file) defines.
.SECONDEXPANSION:
# The images go in too (built first if needed), so `helm install` and `kubectl apply -k k8s/` work
# right after. mk/images.mk, read after this file, names them: $$ defers the lists too.
.PHONY: cluster
cluster: install $(CLUSTER_TOOLS_STAMP) $$(DEPLOY_TOOLS_STAMP) images ## start the one-node cluster with the images in it (KUBECONFIG=data/cluster/kubeconfig)
	$(CLUSTER) up
	$(CLUSTER) load $(SERVICE_IMAGES) $(BACKING_IMAGES)

.PHONY: cluster-down
cluster-down: install ## stop the cluster and remove its state, network and iptables chains
	$(CLUSTER) down
