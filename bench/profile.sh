#!/usr/bin/env bash
# Profile dockyard on one bench case (issue 18: profile before optimising). For each mode
# (first: a cold build on a freshly loaded base; cold: after a reset; cached: the no-op;
# change: after the case's change.sh) it writes MODE.pyspy.txt (py-spy, `--format raw`),
# MODE.top.md (bench/pyspy_top.py --phases), MODE.steps (the `--progress plain` step lines)
# and MODE.time (/usr/bin/time of py-spy + dockyard: its max RSS is the larger of the two;
# dockyard's own is change2.rss here and maxrss_kb in the bench's raw.csv). Then one more
# change build under `-X importtime`: importtime.txt and importtime.md (bench/importtime.py).
#   PEERS_EXTRA=$PWD/bench/peers/dockyard.sh bench/profile.sh files100k [cold cached change]
# Needs the bench extra (WITH_BENCH=1 scripts/setup.sh: py-spy) and setup.sh's state (the
# bases' OCI archives in $W/bases). Its own store (PROFILE_ROOT, default $W/dockyard-profile;
# the bases are loaded into it on first use), so it can run beside a bench run. Uses the
# copy of the bench's context $W/ctx/CASE in $W/ctx-profile/ (or the case's prepare.sh).
# `first` drops the case's bases and loads them again first (dockyard unpacks a base layer
# on its first use, not at load).
# Output: OUT (default $W/profiles/CASE).
# env: RATE (py-spy samples/s, default 200), SHARED, OUT, PROFILE_ROOT
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-/work/shared/peers}
export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh}"
. "$SHARED/lib.sh"
c=$1; shift
modes=${*:-cold cached change}
case_dir=$REPO/bench/cases/$c
[ -d "$case_dir" ] || case_dir=$SHARED/cases/$c
OUT=${OUT:-$W/profiles/$c}
mkdir -p "$OUT"
ctx=$W/ctx-profile/$c   # its own copy: change.sh rewrites files in place
if [ ! -e "$ctx.prepared" ]; then
  rm -rf "$ctx"; mkdir -p "$ctx"
  if [ -e "$W/ctx/$c.prepared" ]; then
    cp -a "$W/ctx/$c/." "$ctx/"
  elif [ -x "$case_dir/prepare.sh" ]; then
    # the cases find shared generators beside them (../bigctx/gen.py), as in run.sh's copy
    tmpc=$(mktemp -d); cp -a "$SHARED/cases/." "$REPO/bench/cases/." "$tmpc/"
    (cd "$ctx" && "$tmpc/$c/prepare.sh"); rm -rf "$tmpc"
  fi
  date > "$ctx.prepared"
fi
cp -a "$case_dir/context/." "$ctx/"
PYSPY=${PYSPY:-$REPO/.venv/bin/py-spy}
PROFILE_ROOT=${PROFILE_ROOT:-$W/dockyard-profile}
_dyp() { "$_DY_BIN" --root "$PROFILE_ROOT" "$@"; }
bases=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$case_dir/context/Dockerfile" | sort -u)
load_base() { _dyp rmi "$1" >/dev/null 2>&1 || true; _dyp prune --all >/dev/null 2>&1 || true
              _dyp load -i "$W/bases/${1%%:*}.oci.tar" >/dev/null; }
for b in $bases; do _dyp inspect "$b" >/dev/null 2>&1 || load_base "$b"; done
reset() { _dyp rmi "$1" >/dev/null 2>&1 || true; _dyp cache prune --all >/dev/null 2>&1 || true
          _dyp prune --all >/dev/null 2>&1 || true; }
tag="bench/$c:dockyard"
for mode in $modes; do
  case $mode in
    first)  reset "$tag"; for b in $bases; do load_base "$b"; done ;;
    cold)   reset "$tag" ;;
    change) (cd "$ctx" && "$case_dir/change.sh" "profile-$(date +%s%N)") ;;
  esac
  peer_dockyard_cmd "$ctx" "$tag"; CMD=("${CMD[@]/#$_DY_ROOT/$PROFILE_ROOT}")
  /usr/bin/time -f '%e s wall, %U s user, %S s sys, %M kB max RSS' -o "$OUT/$mode.time" \
    env "${CMD_ENV[@]}" "$PYSPY" record --full-filenames --rate "${RATE:-200}" --format raw --threads \
    -o "$OUT/$mode.pyspy.txt" -- "${CMD[@]}" > "$OUT/$mode.log" 2>&1 || {
    # py-spy cannot attach to a process that is gone before its first sample (a no-op
    # rebuild takes ~20 ms): then time the build alone, and say so
    grep -q 'No such file or directory (os error 2)' "$OUT/$mode.log" || {
      echo "build failed: see $OUT/$mode.log" >&2; exit 1; }
    /usr/bin/time -f '%e s wall, %U s user, %S s sys, %M kB max RSS (too short for py-spy)' \
      -o "$OUT/$mode.time" env "${CMD_ENV[@]}" "${CMD[@]}" > "$OUT/$mode.log" 2>&1 \
      || { echo "build failed: see $OUT/$mode.log" >&2; exit 1; }
    : > "$OUT/$mode.pyspy.txt"
  }
  python3 "$REPO/bench/pyspy_top.py" --phases "$OUT/$mode.pyspy.txt" > "$OUT/$mode.top.md"
  grep -E '^#[0-9]+ (\[|DONE|CACHED)' "$OUT/$mode.log" > "$OUT/$mode.steps" || true
  log "$c $mode: $(cat "$OUT/$mode.time")"
done
# what a build that misses imports: rebuild after one more change, under -X importtime
# (no py-spy here, so change2.rss is dockyard's own peak RSS, in kB)
(cd "$ctx" && "$case_dir/change.sh" "importtime-$(date +%s%N)")
peer_dockyard_cmd "$ctx" "$tag"; CMD=("${CMD[@]/#$_DY_ROOT/$PROFILE_ROOT}")
/usr/bin/time -f '%M' -o "$OUT/change2.rss" env "${CMD_ENV[@]}" PYTHONPROFILEIMPORTTIME=1 "${CMD[@]}" \
  > /dev/null 2> "$OUT/importtime.txt" || true
python3 "$REPO/bench/importtime.py" "$OUT/importtime.txt" > "$OUT/importtime.md"
log "profiles in $OUT"
