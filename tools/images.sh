#!/usr/bin/env bash
# `make images`: build the operator and worker images, with the versions pinned in constraints.txt.
#
#   1. A Docker engine. When `docker info` does not answer: `apt-get install docker.io` if dockerd is
#      missing (Debian's 20.10, root needed), then start dockerd in the background (log in
#      $cache/dockerd.log). Said on stdout before it is done, never silently.
#   2. The base image. Both Dockerfiles take BASE_IMAGE (upstream default python:3.11.14-slim-bookworm).
#      When that cannot be pulled (no registry reachable), a Debian bookworm base is made from Debian's
#      packages: `mmdebstrap --variant=minbase bookworm` with Python 3.11, then `docker import`. Its
#      rootfs is cached in $cache/base/, keyed by the package list and the Debian snapshot date below.
#   3. Both images, pip's downloads cached by BuildKit between builds (outside the repository).
#   4. Their sizes.
#
#   tools/images.sh                      # everything
#   BASE_IMAGE=my/python:3.11 tools/images.sh
#   TORCH_CUDA_ARCH_LIST="9.0" tools/images.sh   # one GPU family (a smaller plugin; the build is hardly faster)
#   tools/images.sh engine               # only make sure the engine answers
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}
REGISTRY=${REGISTRY:-ghcr.io/recon-dev}
VERSION=${VERSION:-0.1.0}
UPSTREAM_BASE=python:3.11.14-slim-bookworm
# The local base: what the images need from Debian (Python 3.11 and venv; a C++ compiler and Python's
# headers for the nvdiffrast plugin are installed by the worker's build stage itself).
LOCAL_BASE_PACKAGES="python3,python3-venv,ca-certificates"
LOCAL_BASE_SUITE=bookworm
log() { echo "images: $*"; }
die() { echo "images: $*" >&2; exit 1; }

ensure_engine() {
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null; then
    [ "$(id -u)" = 0 ] || die "no Docker engine and not root: install docker.io (apt-get install docker.io) and start it"
    log "no Docker engine: installing Debian's docker.io (apt-get install -y docker.io)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
  fi
  command -v docker >/dev/null || die "dockerd is installed but the docker command is not"
  mkdir -p "$cache"
  log "starting dockerd in the background (log: $cache/dockerd.log; stop it with: kill \$(cat /var/run/docker.pid))"
  nohup dockerd >"$cache/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then return; fi
    sleep 1
  done
  die "dockerd did not answer within 60 s: see $cache/dockerd.log"
}

# local_base: print the tag of the locally made Debian base, making it when missing.
local_base() {
  local key tag dir tar
  key=$(echo "$LOCAL_BASE_SUITE $LOCAL_BASE_PACKAGES $(grep -h -o '[0-9]\{8\}T[0-9]\{6\}Z' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | sort -u | tr '\n' ' ')" |
    sha256sum | cut -c1-12)
  tag="recon-local/python:3.11-$LOCAL_BASE_SUITE-$key"
  if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; return; fi
  dir="$cache/base"
  tar="$dir/$LOCAL_BASE_SUITE-$key.tar"
  mkdir -p "$dir"
  if [ ! -f "$tar" ]; then
    command -v mmdebstrap >/dev/null || {
      log "installing mmdebstrap (apt-get install -y mmdebstrap)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null
    }
    log "making a Debian $LOCAL_BASE_SUITE base with mmdebstrap (once, about a minute): $tar" >&2
    mmdebstrap --quiet --variant=minbase --include="$LOCAL_BASE_PACKAGES" \
      --aptopt='Acquire::Languages "none"' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$LOCAL_BASE_SUITE" "$dir/.part-$key.tar" >&2 # (mmdebstrap picks the format by the extension)
    mv "$dir/.part-$key.tar" "$tar"
  fi
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$tar" "$tag" >/dev/null
  echo "$tag"
}

ensure_engine
[ "${1:-}" = engine ] && exit 0

base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
  if docker image inspect "$UPSTREAM_BASE" >/dev/null 2>&1 || timeout 60 docker pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
    base=$UPSTREAM_BASE
  else
    log "$UPSTREAM_BASE cannot be pulled (no registry reachable?): using a base made from Debian's packages"
    base=$(local_base)
  fi
fi
log "base image: $base"

# BuildKit (for pip's cache mount): a docker CLI of 23 or later needs the buildx plugin for it, which
# Debian 12 does not package; Debian's own docker CLI (20.10) has BuildKit built in.
build_cli=docker
if ! docker buildx version >/dev/null 2>&1; then
  if [ -x /usr/bin/docker ] && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
    build_cli=/usr/bin/docker
  else
    die "BuildKit is needed: install the docker buildx plugin (or Debian's docker.io, whose CLI has BuildKit built in)"
  fi
fi

args=(--build-arg "BASE_IMAGE=$base")
# Behind a TLS-inspecting proxy pip needs this machine's CA bundle: lent to the build as a secret
# (never stored in an image). PIP_CERT, else pip's own `global.cert` setting.
ca=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$ca" ] && [ -s "$ca" ]; then
  log "pip's CA bundle for the build: $ca"
  args+=(--secret "id=pip-ca,src=$ca")
fi
[ -n "${TORCH_CUDA_ARCH_LIST:-}" ] && args+=(--build-arg "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST")
export DOCKER_BUILDKIT=1
cd "$repo"
for image in operator worker; do
  start=$(date +%s)
  log "building $REGISTRY/recon-$image:$VERSION (Dockerfile.$image)"
  "$build_cli" build --network host "${args[@]}" -f "Dockerfile.$image" -t "$REGISTRY/recon-$image:$VERSION" .
  log "recon-$image built in $(($(date +%s) - start)) s"
done
for image in operator worker; do
  size=$(docker image inspect -f '{{.Size}}' "$REGISTRY/recon-$image:$VERSION")
  log "$REGISTRY/recon-$image:$VERSION $((size / 1000000)) MB"
done
