#!/usr/bin/env bash
# Remove shared venv bases that no clone on this machine has used for a while.
#
#   tools/venv_prune.sh CACHE KEEP [DAYS]
#
# Every `tools/venv.sh` run touches `<base>/.last-used` of the base it links to; a base (6 GB of
# PyTorch and friends) whose stamp is older than DAYS (default $RECON_VENV_KEEP_DAYS or 14) is
# deleted, except KEEP (the one in use now). A clone whose base was pruned gets it rebuilt by its
# next `make venv`. Bases of the old layout (`venv-<key>`, no stamp) are removed too. Callers hold the
# cache's venv.lock, so no base is removed while another process builds it.
set -euo pipefail
cache=$1
keep=$2
days=${3:-${RECON_VENV_KEEP_DAYS:-14}}
[[ "$days" =~ ^[0-9]+$ ]] || { echo "venv prune: RECON_VENV_KEEP_DAYS must be a whole number of days, got '$days'" >&2; exit 2; }
shopt -s nullglob
for base in "$cache"/venv-*; do
  [[ "$(basename "$base")" =~ ^venv-(base-)?[0-9a-f]{16}$ ]] || continue
  [ "$base" = "$keep" ] && continue
  [ -d "$base" ] || continue
  stamp="$base/.last-used"
  if [ -L "$base" ]; then
    continue # a link to a base elsewhere: not ours to delete
  fi
  if [ -f "$stamp" ] && [ -z "$(find "$stamp" -mtime +"$days" -print)" ]; then
    continue # used within the last DAYS days
  fi
  echo "venv: removing $base (not used by any clone for over $days days; rebuilt on demand)"
  rm -rf "$base"
done
