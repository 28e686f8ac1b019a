#!/usr/bin/env bash
# dockyard against BuildKit (and any other peer) on the shared cases plus ours (bench/cases/).
#
# /work/shared/peers is read-only and bench.sh reads cases from its own folder, so this
# assembles a writable copy under /var/tmp/dockyard-peers (shared scripts + shared cases +
# bench/cases/*) and runs its bench.sh with dockyard plugged in. State, daemons and the
# registry are the shared ones (PEERS_WORK / PEERS_RUN), so run setup.sh first:
#   PEERS_EXTRA=$PWD/bench/peers/dockyard.sh /work/shared/peers/setup.sh
# (and bench/setup-scale.sh for the scale cases' bases: bigroot, debian-python).
#
# The copy's bench.sh also records each build's peak RSS (`/usr/bin/time` %M, kB) in a
# last column of raw.csv, `maxrss_kb`: the client process's, so for the docker peers it
# is the docker CLI's, not the daemon's; for dockyard and buildah it is the builder's.
#
# env: everything bench.sh takes (RUNS, WARMUP, OUT, BUILD_TIMEOUT), plus
#      PEERS   default "dockyard docker_buildkit"; dockyard_rootless is dockyard as an
#              ordinary user (bench/peers/dockyard-rootless.sh, issue 16)
#      CASES   default "multistage bigctx runchain bigctx-norun"; named sets:
#              "scale" = issue 18's cases (below), "growth" = growth-1x growth-4x growth-16x
#      SHARED  the shared peers folder (default /work/shared/peers)
#      COPY_TO where the writable copy goes (default /var/tmp/dockyard-peers)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-/work/shared/peers}
COPY_TO=${COPY_TO:-/var/tmp/dockyard-peers}
GROWTH="growth-1x growth-4x growth-16x"
SCALE="files100k files100k-ignore bigroot runone-busybox runone-bigroot layers100 pipapp wide $GROWTH"

rm -rf "$COPY_TO"
mkdir -p "$COPY_TO"
cp -a "$SHARED/." "$COPY_TO/"
chmod -R u+w "$COPY_TO"
for case_dir in "$REPO"/bench/cases/*/; do
  name=$(basename "$case_dir")
  rm -rf "$COPY_TO/cases/$name"
  cp -a "$case_dir" "$COPY_TO/cases/$name"
done
# peak RSS per build: one more field from /usr/bin/time, one more column in raw.csv
python3 - "$COPY_TO/bench.sh" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
edits = [
    ("sys_s,rc,cache_hits,size_bytes,layers\"", "sys_s,rc,cache_hits,size_bytes,layers,maxrss_kb\""),
    ("-f '%e %U %S'", "-f '%e %U %S %M'"),
    ("read -r wall usr sys <", "read -r wall usr sys rss <"),
    ("${size:-},${layers:-}\"", "${size:-},${layers:-},${rss:-}\""),
]
for old, new in edits:
    if text.count(old) != 1:
        sys.exit(f"run.sh: bench.sh changed, cannot add the RSS column ({old!r} not found once)")
    text = text.replace(old, new)
open(path, "w").write(text)
PY

CASES=${CASES:-multistage bigctx runchain bigctx-norun}
expanded=""
for c in $CASES; do
  case $c in scale) expanded="$expanded $SCALE" ;; growth) expanded="$expanded $GROWTH" ;; *) expanded="$expanded $c" ;; esac
done
export CASES="${expanded# }"
export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh $REPO/bench/peers/dockyard-rootless.sh}"
export PEERS="${PEERS:-dockyard docker_buildkit}"
# issue 18: a peer that does not finish a build in 10 minutes is out of that case
export BUILD_TIMEOUT=${BUILD_TIMEOUT:-600}
exec "$COPY_TO/bench.sh" "$@"
