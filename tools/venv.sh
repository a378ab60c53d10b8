#!/usr/bin/env bash
# Create or reuse the project's virtual environment.
#
# Two layers, so that every clone runs its own code while PyTorch is installed once per machine:
#   - a shared base venv in the cache outside the repository, keyed by a hash of everything that
#     decides its third-party contents (both pyproject files, the constraints file, the Python version
#     and `base_layout` below). It holds the dependencies only, never this project's packages.
#   - `.venv` in the checkout: a small venv of its own whose site-packages adds the base's
#     (a `.pth` file) and holds editable installs of *this* checkout's operator/ and worker/.
# Two clones on one machine therefore share PyTorch but never import each other's trees.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${RECON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-operator}
python=${PYTHON:-python3}
constraints=constraints.txt

# Bump when the way the base is built changes (editing the rest of this script does not rebuild it).
base_layout=1
key=$( (echo "$base_layout"; cat operator/pyproject.toml worker/pyproject.toml kubectl-recon/pyproject.toml "$constraints" 2>/dev/null; "$python" -VV) |
  sha256sum | cut -c1-16)
base="$cache/venv-base-$key"

mkdir -p "$cache"
# One base builder at a time per machine (parallel `make` runs, several clones).
exec 9>"$cache/venv.lock"
flock 9

if [ ! -f "$base/.complete" ]; then
  echo "venv: building the shared base $base (first run on this machine: downloads PyTorch, a few minutes)"
  rm -rf "$base"
  "$python" -m venv "$base"
  "$base/bin/python" -m pip install -q --upgrade pip 'setuptools>=77' wheel
  cflag=()
  [ -f "$constraints" ] && cflag=(-c "$constraints")
  # Resolve the dependencies through the project's own metadata, then drop the project itself:
  # the base must not hold any clone's code.
  "$base/bin/python" -m pip install -q "${cflag[@]}" "./operator[dev]" "./worker[engine,dev]" "./kubectl-recon[dev]"
  "$base/bin/python" -m pip uninstall -q -y recon-operator recon-worker kubectl-recon
  touch "$base/.complete"
fi
touch "$base/.last-used"
"$root/tools/venv_prune.sh" "$cache" "$base"
flock -u 9

base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

# The checkout's own venv: rebuilt when it is missing, an old-style symlink, or made on another base.
if [ -L .venv ]; then
  rm -f .venv
fi
if [ ! -f .venv/.recon-base ] || [ "$(cat .venv/.recon-base)" != "$base" ] || [ ! -x .venv/bin/python ]; then
  rm -rf .venv
  "$python" -m venv --without-pip .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # site.addsitedir (not a bare path) so that the base's own .pth files are processed too.
  echo "import site; site.addsitedir('$base_site')" >"$site/_recon_base.pth"
  # Third-party commands (pytest, ruff, mypy, kubectl, moto_server ...) from the base, unless ours.
  for f in "$base"/bin/*; do
    name=$(basename "$f")
    case "$name" in python* | pip* | activate* | Activate* | deactivate) continue ;; esac
    [ -e ".venv/bin/$name" ] || ln -s "$f" ".venv/bin/$name"
  done
  echo "$base" >.venv/.recon-base
fi

# This checkout's packages, editable (cheap: no dependencies are resolved).
if [ ! -f .venv/.recon-editable ] || [ operator/pyproject.toml -nt .venv/.recon-editable ] ||
  [ worker/pyproject.toml -nt .venv/.recon-editable ] || [ kubectl-recon/pyproject.toml -nt .venv/.recon-editable ]; then
  # (setuptools warns about editable installs of a package whose folder shares its name: that is the point.)
  PYTHONWARNINGS=ignore "$base/bin/python" -m pip --python .venv/bin/python install -q --no-deps --no-build-isolation \
    -e ./operator -e ./worker -e ./kubectl-recon
  touch .venv/.recon-editable
fi
