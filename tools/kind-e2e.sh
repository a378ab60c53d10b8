#!/usr/bin/env bash
# `make kind-e2e`: the end-to-end tests (tests/e2e) against a kind cluster that runs the real images.
#
# Needs Docker. Creates the kind cluster `recon-e2e`, builds Dockerfile.operator and Dockerfile.worker,
# loads both into the cluster, runs MinIO in it (reached from here through a NodePort mapped to
# 127.0.0.1:$S3_PORT), then runs pytest tests/e2e, which installs charts/recon-operator with Helm and
# submits CPU jobs (`resources.gpus: 0`). The cluster is deleted afterwards unless KEEP=1.
#
#   tools/kind-e2e.sh                 # everything
#   KEEP=1 tools/kind-e2e.sh          # keep the cluster (kubeconfig: .scratch/kind/kubeconfig)
#   SKIP_BUILD=1 tools/kind-e2e.sh    # reuse images built before (recon-operator:e2e, recon-worker:e2e)
#
# kind is installed on first use with `go install sigs.k8s.io/kind@$KIND_VERSION` into the same cache
# folder as helm (tools/k8s/build.sh). Not run in CI (no Docker there): see docs/install.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=k8s/versions.env
. "$repo/tools/k8s/versions.env"
KIND_VERSION=${KIND_VERSION:-v0.33.0}
MINIO_IMAGE=${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z}
CLUSTER=${KIND_CLUSTER:-recon-e2e}
S3_PORT=${S3_PORT:-30900}
S3_USER=recon-e2e S3_PASSWORD=recon-e2e-secret
cache=${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}
bin="$cache/k8s-$K8S_VERSION/bin"
state="$repo/.scratch/kind"
kubeconfig="$state/kubeconfig"
py="$repo/.venv/bin/python"

die() { echo "kind-e2e: $*" >&2; exit 1; }
command -v docker >/dev/null || die "Docker is needed (kind runs Kubernetes nodes as containers)"
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer (docker info)"
[ -x "$py" ] || die "no .venv: run \`make venv\` first"
[ -x "$bin/helm" ] || "$repo/tools/k8s/build.sh"

# kind, once, beside helm; a stamp says which version it is.
if [ ! -x "$bin/kind" ] || [ "$(cat "$bin/kind.version" 2>/dev/null)" != "$KIND_VERSION" ]; then
  echo "kind-e2e: go install sigs.k8s.io/kind@$KIND_VERSION"
  tmp=$(mktemp -d)
  GOBIN="$tmp" CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
  mv -f "$tmp/kind" "$bin/kind" && echo "$KIND_VERSION" > "$bin/kind.version"
  rm -rf "$tmp"
fi
kind="$bin/kind"
export PATH="$bin:$repo/.venv/bin:$PATH"

mkdir -p "$state"
cleanup() {
  if [ "${KEEP:-0}" = "1" ]; then
    echo "kind-e2e: KEEP=1, cluster $CLUSTER kept: export KUBECONFIG=$kubeconfig"
  else
    "$kind" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if ! "$kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$kind" create cluster --name "$CLUSTER" --kubeconfig "$kubeconfig" --wait 120s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: 30900
        hostPort: $S3_PORT
        listenAddress: 127.0.0.1
YAML
else
  "$kind" get kubeconfig --name "$CLUSTER" > "$kubeconfig"
fi
export KUBECONFIG="$kubeconfig"

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  docker build -f "$repo/Dockerfile.operator" -t recon-operator:e2e "$repo"
  docker build -f "$repo/Dockerfile.worker" -t recon-worker:e2e "$repo"
fi
"$kind" load docker-image --name "$CLUSTER" recon-operator:e2e recon-worker:e2e

# MinIO as the object store: pods reach it as minio.minio.svc, this machine on 127.0.0.1:$S3_PORT.
kubectl apply -f - <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: minio}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: minio}
spec:
  replicas: 1
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
        - name: minio
          image: $MINIO_IMAGE
          args: [server, /data]
          env:
            - {name: MINIO_ROOT_USER, value: $S3_USER}
            - {name: MINIO_ROOT_PASSWORD, value: $S3_PASSWORD}
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: minio}
spec:
  type: NodePort
  selector: {app: minio}
  ports: [{port: 9000, targetPort: 9000, nodePort: 30900}]
YAML
kubectl -n minio rollout status deploy/minio --timeout=180s

# Chart values for this cluster: the loaded images, never pulled; small CPU workers; MinIO.
cat > "$state/values.yaml" <<YAML
image: {repository: recon-operator, tag: e2e, pullPolicy: Never}
operator: {reconcileIntervalSeconds: 2, preflightRetries: 2, preflightBackoffSeconds: 1}
worker:
  image: {repository: recon-worker, tag: e2e, pullPolicy: Never}
  cpu: "1"
  memory: 4Gi
  scratchSize: 2Gi
  tolerations: []
  s3: {endpoint: "http://minio.minio.svc:9000", region: us-east-1}
YAML
helm uninstall recon-operator -n recon-system >/dev/null 2>&1 || true

export RECON_E2E_KUBECONFIG="$kubeconfig" RECON_E2E_VALUES="$state/values.yaml"
export RECON_E2E_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" RECON_E2E_S3_ACCESS_KEY=$S3_USER RECON_E2E_S3_SECRET_KEY=$S3_PASSWORD
cd "$repo"
"$py" -m pytest tests/e2e -m cluster -v "$@"
