#!/usr/bin/env bash
# dockyard against BuildKit (and any other peer) on the shared cases plus ours (bench/cases/).
#
# /work/shared/peers is read-only and bench.sh reads cases from its own folder, so this
# assembles a writable copy under /var/tmp/dockyard-peers (shared scripts + shared cases +
# bench/cases/*) and runs its bench.sh with dockyard plugged in. State, daemons and the
# registry are the shared ones (PEERS_WORK / PEERS_RUN), so run setup.sh first:
#   PEERS_EXTRA=$PWD/bench/peers/dockyard.sh /work/shared/peers/setup.sh
#
# env: everything bench.sh takes (RUNS, WARMUP, OUT, BUILD_TIMEOUT), plus
#      PEERS   default "dockyard docker_buildkit"
#      CASES   default "multistage bigctx runchain bigctx-norun"
#      SHARED  the shared peers folder (default /work/shared/peers)
#      COPY_TO where the writable copy goes (default /var/tmp/dockyard-peers)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-/work/shared/peers}
COPY_TO=${COPY_TO:-/var/tmp/dockyard-peers}

rm -rf "$COPY_TO"
mkdir -p "$COPY_TO"
cp -a "$SHARED/." "$COPY_TO/"
chmod -R u+w "$COPY_TO"
for case_dir in "$REPO"/bench/cases/*/; do
  name=$(basename "$case_dir")
  rm -rf "$COPY_TO/cases/$name"
  cp -a "$case_dir" "$COPY_TO/cases/$name"
done

export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh}"
export PEERS="${PEERS:-dockyard docker_buildkit}"
export CASES="${CASES:-multistage bigctx runchain bigctx-norun}"
exec "$COPY_TO/bench.sh" "$@"
