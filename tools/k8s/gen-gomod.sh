#!/usr/bin/env bash
# Regenerate tools/k8s/go.mod (kube-apiserver, kube-controller-manager, kube-scheduler) and
# tools/k8s/etcd/go.mod (etcd) from the upstream modules. Run after changing versions.env.
#
# Why: k8s.io/kubernetes' go.mod requires its staging modules (k8s.io/api, client-go, ...) at v0.0.0
# and replaces them with ./staging paths, so `go install k8s.io/kubernetes/cmd/...@v1.36.3` fails.
# A wrapper module that requires k8s.io/kubernetes and replaces each staging module with its
# published tag (v1.X.Y -> v0.X.Y) builds the same code. The replace list is read from upstream's
# go.mod, never typed by hand, so a version bump picks up new staging modules.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
export GOFLAGS=-mod=mod GOWORK=off
staging_version="v0.${K8S_VERSION#v1.}"

upstream_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')

# Each module that upstream requires at v0.0.0 and replaces with a ./staging path.
mapfile -t staging < <(go mod edit -json "$upstream_gomod" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
local = {r["Old"]["Path"] for r in mod.get("Replace") or [] if r["New"]["Path"].startswith("./staging/")}
for req in mod["Require"]:
    if req["Path"] in local and req["Version"] == "v0.0.0":
        print(req["Path"])
')
[ "${#staging[@]}" -gt 0 ] || { echo "gen-gomod: found no staging modules in $upstream_gomod" >&2; exit 1; }
upstream_go=$(go mod edit -json "$upstream_gomod" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Go"])')

# etcd first: its go.mod must exist before the tidy below, or tools/k8s would claim etcd/main.go.
# server/v3 requires its sibling modules at real tags; its replace directives only matter
# inside etcd's own repository, so requiring server/v3 from a wrapper main package is enough.
cd "$here/etcd"
rm -f go.mod go.sum
go mod init recon-operator/tools/k8s/etcd >/dev/null 2>&1
etcd_gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')
etcd_go=$(go mod edit -json "$etcd_gomod" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Go"])')
go mod edit -go="$etcd_go" -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy
echo "gen-gomod: $here/etcd/go.mod: go.etcd.io/etcd/server/v3 $ETCD_VERSION"

cd "$here"
rm -f go.mod go.sum
go mod init recon-operator/tools/k8s >/dev/null 2>&1
go mod edit -go="$upstream_go" -godebug=default=go"${upstream_go%.*}" -require="k8s.io/kubernetes@$K8S_VERSION"
for m in "${staging[@]}"; do
  go mod edit -replace="$m=$m@$staging_version"
done
# `tool` directives name the commands this module builds (`go build tool` builds them all at once).
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  go mod edit -tool="k8s.io/kubernetes/cmd/$cmd"
done
go mod tidy
echo "gen-gomod: $here/go.mod: k8s.io/kubernetes $K8S_VERSION, ${#staging[@]} staging modules at $staging_version"

