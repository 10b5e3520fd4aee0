# A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager; no kubelet)
# built from source with Go, for tests/cluster and for trying the chart and the operator by hand.
# Versions: deploy/controlplane/go.mod. Binaries: .tools/controlplane/, Go caches: .tools/go/.
# See docs/kubernetes.md ("A real API server on this machine"). Type-checked with the other
# delivery scripts in deploy-check.

CLUSTER := $(RUN) python scripts/cluster.py

.PHONY: cluster-tools
cluster-tools: install ## build etcd, kube-apiserver and kube-controller-manager once (cached in .tools/)
	$(CLUSTER) build
TEST_TOOLS += cluster-tools

.PHONY: cluster
cluster: install cluster-tools deploy-tools ## start the local control plane (KUBECONFIG=data/cluster/kubeconfig)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: install ## stop the local control plane and delete its state (data/cluster/)
	$(CLUSTER) down

.PHONY: cluster-test
cluster-test: install services cluster-tools deploy-tools ## only tests/cluster (starts the control plane if needed)
	$(RUN) pytest tests/cluster $(PYTEST_ARGS)
