#!/usr/bin/env bash
# Create or reuse the project's virtual environment.
#
# The venv itself lives in a cache outside the repository, keyed by a hash of everything that decides
# its contents (both pyproject files, the Python version and this script), and `.venv` at the repo root
# is a symlink to it. A second `make test`, or a fresh clone on the same machine, reuses it instead of
# reinstalling PyTorch; only the editable installs are re-pointed at the current checkout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}
python=${PYTHON:-python3}

key=$( (cat operator/pyproject.toml worker/pyproject.toml tools/venv.sh; "$python" -VV) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"

# One builder at a time per machine (parallel `make` runs, several clones).
mkdir -p "$cache"
exec 9>"$cache/venv.lock"
flock 9

if [ ! -f "$venv/.complete" ]; then
  echo "venv: building $venv (first run on this machine: downloads PyTorch, a few minutes)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "operator[dev]" -e "worker[dev]"
  touch "$venv/.complete"
  echo "$root" > "$venv/.editable-root"
fi

# Point the editable installs at this checkout (another clone may have built the venv).
if [ "$(cat "$venv/.editable-root" 2>/dev/null)" != "$root" ]; then
  "$venv/bin/python" -m pip install -q --no-deps -e operator -e worker
  echo "$root" > "$venv/.editable-root"
fi

if [ -L .venv ] || [ ! -e .venv ]; then
  ln -sfn "$venv" .venv
else
  echo "venv: .venv exists and is not a symlink; remove it to use the cached venv ($venv)" >&2
  exit 1
fi
