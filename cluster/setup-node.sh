#!/usr/bin/env bash
# Set-up of one cluster node, run by the cluster launcher (setup_commands) or by hand on each node:
#
#   bash ~/ticketsearch/cluster/setup-node.sh [SPEC ...]
#
# 1. installs uv (user-local) if the node has none;
# 2. installs ticketsearch's locked dependencies into ~/ticketsearch/.venv, from the checkout the
#    launcher synced from the driver's machine: `--frozen` installs exactly uv.lock, so every node
#    runs the driver's versions (a node never resolves newer ones);
# 3. prepares the data sets of each SPEC with `ticketsearch data`: downloads them into the spec's
#    data.root under the data set's file lock (concurrent set-ups on one machine, or nodes sharing an
#    NFS data root, download once) and checks they parse.
# Safe to run again: each step does nothing when its work is done.
set -euo pipefail

CHECKOUT="${TICKETSEARCH_HOME:-$HOME/ticketsearch}"
cd "$CHECKOUT"

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
  python3 -m pip install --user --quiet uv
fi
UV="$(command -v uv || echo "$HOME/.local/bin/uv")"

"$UV" sync --frozen --quiet

for spec in "$@"; do
  "$CHECKOUT/.venv/bin/ticketsearch" data "$spec"
done
