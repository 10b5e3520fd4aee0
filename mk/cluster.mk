# A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager; no kubelet)
# built from source with Go, for tests/cluster and for trying the chart and the operator by hand.
# Versions: deploy/controlplane/go.mod. Binaries: .tools/controlplane/, Go caches: .tools/go/.
# See docs/kubernetes.md ("A real API server on this machine"). `make pytest T=tests/cluster`
# runs only its tests.

CLUSTER := $(RUN) python scripts/cluster.py
TYPED_SCRIPTS += scripts/cluster.py

# `cluster.py build` compiles once per go.mod versions (~10 minutes) and is a no-op afterwards;
# the stamp only saves starting it.
CLUSTER_TOOLS_STAMP := $(TOOLS)/controlplane/.built
$(CLUSTER_TOOLS_STAMP): deploy/controlplane/go.mod | install
	$(CLUSTER) build
	@touch $@
TEST_TOOLS += $(CLUSTER_TOOLS_STAMP)

# helm and kubectl come along for trying the chart on it; $$ defers their stamp's name, which
# mk/deploy.mk (read after this file) defines.
.SECONDEXPANSION:
.PHONY: cluster
cluster: install $(CLUSTER_TOOLS_STAMP) $$(DEPLOY_TOOLS_STAMP) ## start the local control plane (KUBECONFIG=data/cluster/kubeconfig)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: install ## stop the local control plane and delete its state (data/cluster/)
	$(CLUSTER) down
