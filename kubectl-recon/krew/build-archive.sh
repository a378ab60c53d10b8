#!/usr/bin/env bash
# Build the Krew archives of kubectl-recon, one per platform, and the Krew manifest that points at them.
#
#   kubectl-recon/krew/build-archive.sh OUT_DIR [PLATFORM ...]
#
# PLATFORMs: linux-amd64, linux-arm64, darwin-amd64, darwin-arm64 (default: all four).
# The archive holds `kubectl-recon` (a launcher that runs the plugin with the system's python3, 3.11 or
# newer) and `lib/`, the plugin and its dependencies installed from PyPI wheels for that platform
# (recon-worker's core only: no PyTorch). Writes OUT_DIR/kubectl-recon-<version>-<platform>.tar.gz
# and OUT_DIR/recon.yaml: kubectl-recon/krew/recon.yaml with each archive's URI and sha256 filled in
# (RELEASE_URL is the folder the archives are published under). Needs PyPI.
set -euo pipefail
out=$(mkdir -p "${1:?usage: build-archive.sh OUT_DIR [PLATFORM ...]}" && cd "$1" && pwd)
shift
platforms=("$@")
[ ${#platforms[@]} -gt 0 ] || platforms=(linux-amd64 linux-arm64 darwin-amd64 darwin-arm64)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
pyver=${PLUGIN_PYTHON_VERSION:-3.11}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/kubectl-recon/pyproject.toml")
constraints=()
[ -f "$repo/constraints.txt" ] && constraints=(-c "$repo/constraints.txt")

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$python" -m pip wheel -q --no-deps -w "$tmp/wheels" "$repo/worker" "$repo/kubectl-recon"
release=${RELEASE_URL:-https://github.com/recon-dev/recon-operator/releases/download/kubectl-recon-v$version}
sed "s|{{VERSION}}|v$version|g" "$here/recon.yaml" > "$tmp/recon.yaml"

for platform in "${platforms[@]}"; do
  case "$platform" in
    linux-amd64) tags=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64) ;;
    linux-arm64) tags=(manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64) ;;
    darwin-amd64) tags=(macosx_11_0_x86_64 macosx_10_12_x86_64 macosx_10_9_x86_64) ;;
    darwin-arm64) tags=(macosx_11_0_arm64) ;;
    *) echo "build-archive.sh: unknown platform $platform" >&2; exit 2 ;;
  esac
  root="$tmp/root-$platform"
  flags=()
  for tag in "${tags[@]}"; do flags+=(--platform "$tag"); done
  "$python" -m pip install -q --target "$root/lib" --only-binary=:all: --implementation cp \
    --python-version "$pyver" "${flags[@]}" "${constraints[@]}" "$tmp"/wheels/*.whl
  rm -rf "$root/lib/bin"
  cat > "$root/kubectl-recon" <<'LAUNCH'
#!/bin/sh
# kubectl-recon from its Krew archive: the plugin and its libraries are in lib/ beside this file.
here=$(cd "$(dirname "$0")" && pwd -P)
PYTHONPATH="$here/lib${PYTHONPATH:+:$PYTHONPATH}" exec "${KUBECTL_RECON_PYTHON:-python3}" -m recon_kubectl "$@"
LAUNCH
  chmod +x "$root/kubectl-recon"
  printf 'kubectl-recon is part of recon-operator, licensed under the Apache License, Version 2.0\n(SPDX: Apache-2.0). The libraries in lib/ carry their own licences in their *.dist-info folders.\n' \
    > "$root/LICENSE"
  archive="$out/kubectl-recon-$version-$platform.tar.gz"
  tar -C "$root" --sort=name --owner=0 --group=0 --mtime='2026-01-01' -czf "$archive" .
  sha=$(sha256sum "$archive" | cut -d' ' -f1)
  sed -i -e "s|{{URI_$platform}}|$release/$(basename "$archive")|" -e "s|{{SHA256_$platform}}|$sha|" "$tmp/recon.yaml"
  echo "$archive $sha"
done
cp "$tmp/recon.yaml" "$out/recon.yaml"
