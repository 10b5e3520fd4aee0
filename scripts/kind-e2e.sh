#!/usr/bin/env bash
# `make kind-e2e` (needs docker and kind; not run in CI here, where neither exists): a kind
# cluster with ingress-nginx, the four images built and loaded, throw-away backing services, the
# chart installed with the operator, `helm test`, then tests/e2e against the ingress.
set -euo pipefail
cluster=${1:-oms-e2e}; tag=${2:-dev}
cd "$(dirname "$0")/.."
HELM=${HELM_BIN:-.tools/bin/helm}
KUBECTL=${KUBECTL_BIN:-.tools/bin/kubectl}
namespace=oms

if ! kind get clusters | grep -qx "$cluster"; then
  cat <<KIND | kind create cluster --name "$cluster" --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: InitConfiguration
        nodeRegistration:
          kubeletExtraArgs:
            node-labels: "ingress-ready=true"
    extraPortMappings:
      - containerPort: 80
        hostPort: 8080
KIND
fi
context="kind-$cluster"
"$KUBECTL" --context "$context" apply -f https://raw.githubusercontent.com/kubernetes/ingress-nginx/main/deploy/static/provider/kind/deploy.yaml
"$KUBECTL" --context "$context" -n ingress-nginx wait --for=condition=Available deployment/ingress-nginx-controller --timeout=300s

make images IMAGE_REGISTRY= IMAGE_TAG="$tag"
for service in api consumer worker operator; do
  kind load docker-image --name "$cluster" "oms-$service:$tag"
done

"$KUBECTL" --context "$context" create namespace "$namespace" --dry-run=client -o yaml | "$KUBECTL" --context "$context" apply -f -
"$KUBECTL" --context "$context" -n "$namespace" apply -f deploy/dev/backing-services.yaml
"$KUBECTL" --context "$context" -n "$namespace" wait --for=condition=Available deployment --all --timeout=300s

"$HELM" upgrade --install oms charts/oms --kube-context "$context" --namespace "$namespace" \
  --values charts/oms/ci/dev-values.yaml \
  --set image.tag="$tag" --set securityContext.readOnlyRootFilesystem=true \
  --set ingress.enabled=true --set ingress.className=nginx \
  --set 'ingress.hosts[0].host=localhost' --set 'ingress.hosts[0].paths[0].path=/' \
  --set 'ingress.hosts[0].paths[0].pathType=Prefix' \
  --wait --timeout 10m
"$HELM" test oms --kube-context "$context" --namespace "$namespace" --logs
OMS_E2E_BASE_URL=http://localhost:8080 .venv/bin/pytest tests/e2e -m e2e
