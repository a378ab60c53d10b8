#!/usr/bin/env bash
# Build the local control plane's binaries from the Go module proxy, only those that are missing:
#   kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubelet, kube-proxy                                       (module tools/k8s, one `go build`)
#   etcd                                                      (module tools/k8s/etcd)
#   kwok, helm, kueue                                         (`go install pkg@version`, their own go.mod)
#   containerd, ctr, containerd-shim-runc-v2                  (the same, containerd v2: the real node)
# into ${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}/k8s-<K8S_VERSION>/bin/.
# Each binary has a <name>.version stamp; a binary whose stamp does not match versions.env is rebuilt.
# Binaries are linked under a temporary name and renamed into place, so a binary that exists is whole.
#
#   tools/k8s/build.sh            build what is missing, print the bin folder on the last line
#   tools/k8s/build.sh --print    print the bin folder only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}
bin="$cache/k8s-$K8S_VERSION/bin"
if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi

# Static binaries, no local paths in them, modules resolved from the proxy (never a vendor folder).
# -buildvcs=false: the etcd wrapper lives in this repository; stamping its commit would make every
# commit give a different etcd binary.
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false" GOWORK=off
mkdir -p "$bin"
# One builder at a time per machine (several clones, parallel `make`): the second waits, then finds
# the binaries present.
exec 8>"$bin/.build.lock"
flock 8
tmp=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# needs NAME VERSION: true when bin/NAME is missing or was built for another version.
needs() { [ ! -x "$bin/$1" ] || [ "$(cat "$bin/$1.version" 2>/dev/null)" != "$2" ]; }
# install NAME VERSION: move a finished binary from the temp folder into place, then stamp it.
install_bin() { mv -f "$tmp/$1" "$bin/$1" && echo "$2" > "$bin/$1.version"; }
now() { date +%s; }
total_start=$(now)
built=0

# --- Kubernetes: the three commands in one `go build`, so shared packages compile once.
k8s_cmds=()
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  if needs "$cmd" "$K8S_VERSION"; then k8s_cmds+=("$cmd"); fi
done
if [ "${#k8s_cmds[@]}" -gt 0 ]; then
  echo "build: ${k8s_cmds[*]} $K8S_VERSION ..."
  start=$(now)
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  # buildDate is the release's commit time (from the proxy's .info), so the build is reproducible.
  # gitCommit stays empty: module zips carry no commit hash.
  build_date=$(cd "$here" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json, sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])')
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  pkgs=()
  for cmd in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  (cd "$here" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for cmd in "${k8s_cmds[@]}"; do install_bin "$cmd" "$K8S_VERSION"; done
  echo "build: ${k8s_cmds[*]} done in $(( $(now) - start ))s"
  built=1
fi

# --- etcd: a wrapper main package around etcdmain.Main (tools/k8s/etcd).
if needs etcd "$ETCD_VERSION"; then
  echo "build: etcd $ETCD_VERSION ..."
  start=$(now)
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$tmp/etcd" .)
  install_bin etcd "$ETCD_VERSION"
  echo "build: etcd done in $(( $(now) - start ))s"
  built=1
fi

# --- kwok and helm: their own go.mod has no replace directives, so `go install pkg@version` works.
go_install() { # NAME VERSION PACKAGE [LDFLAGS [STAMP]]  (STAMP defaults to VERSION)
  local stamp=${5:-$2}
  if needs "$1" "$stamp"; then
    echo "build: $1 $stamp ..."
    local start; start=$(now)
    (cd "$tmp" && GOBIN="$tmp" go install -ldflags "-s -w ${4:-}" "$3@$2")
    install_bin "$1" "$stamp"
    echo "build: $1 done in $(( $(now) - start ))s"
    built=1
  fi
}
go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
# helm: the ldflags of helm's own Makefile. Its source carries only "v3.22" and a default Kubernetes
# of v1.20 (what `helm template` checks a chart's kubeVersion against); the release builds stamp the
# full version and the Kubernetes version of the client-go that helm's go.mod requires (client-go
# v0.X.Y is Kubernetes 1.X), so do the same. The stamp names the flags' revision, so a helm built
# without them is rebuilt.
helm_ldflags() {
  local gomod client_go minor flags
  gomod=$(cd "$here" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
  minor=${client_go#v0.}; minor=${minor%%.*}
  flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$flags"
}
helm_stamp="$HELM_VERSION+release-ldflags"
if needs helm "$helm_stamp"; then
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$(helm_ldflags)" "$helm_stamp"
fi
# kueue: its release builds stamp the version into pkg/version; the CRDs the cluster tool installs
# are read from the same module in the module cache (config/components/crd), so this download
# also fetches them.
go_install kueue "$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"

# --- pause: the real node's sandbox image binary (tools/k8s/pause), versioned with the node's containerd.
if needs pause "$CONTAINERD_VERSION"; then
  (cd "$here/pause" && go build -ldflags "-s -w" -o "$tmp/pause" .)
  install_bin pause "$CONTAINERD_VERSION"
  built=1
fi

# containerd 2.x for the real node's kubelet (Kubernetes >= 1.36 needs containerd >= 2). Static
# (CGO_ENABLED=0): no btrfs snapshotter, which the node does not use; runc is Debian's (seccomp).
for cmd in containerd ctr containerd-shim-runc-v2; do
  go_install "$cmd" "$CONTAINERD_VERSION" "github.com/containerd/containerd/v2/cmd/$cmd" \
    "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
done

if [ "$built" = 1 ]; then echo "build: all done in $(( $(now) - total_start ))s"; fi
echo "$bin"
