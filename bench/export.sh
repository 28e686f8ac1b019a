#!/usr/bin/env bash
# layers100's export, timed apart from its build (issue 18): each after a cold build (untimed),
#   oci   the image to an OCI archive with gzip layers:
#           dockyard  `dockyard save --format oci`   (isal gzip, the layer tars made from the
#                      snapshots first: a fresh build keeps no layer tar, docs/store.md)
#           buildah   `buildah push IMG oci-archive:FILE`            (gzip)
#           BuildKit  dockerd 20.10's BuildKit has no OCI exporter ("exporter oci could not
#                      be found"), so its row is `docker save` (uncompressed docker archive)
#   push  the image to the loopback registry, gzip layers, a new repository per run; every
#         cold build makes new layers (/dev/urandom in each RUN), so no blob is there yet.
# MB/s = the image's uncompressed size (all its layers, as the peer's inspect reports it)
# divided by the wall time. Output: OUT/export.csv and a median table on stdout.
# Run after setup.sh; state, daemons and registry as in bench.sh (PEERS_WORK, PEERS_RUN...).
# env: RUNS (default 3), PEERS (default "dockyard docker_buildkit"), OUT, CASE (layers100)
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-/work/shared/peers}
export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh}"
. "$SHARED/lib.sh"
RUNS=${RUNS:-3}
PEERS=${PEERS:-dockyard docker_buildkit}
CASE=${CASE:-layers100}
OUT=${OUT:-$W/results}
CSV=$OUT/export.csv
mkdir -p "$OUT" "$W/logs/export" "$W/ctx"
# the case's bases, where a store does not have them yet (e.g. DOCKYARD_BENCH_ROOT=new store)
for peer in $PEERS; do
  [ "$peer" = dockyard ] || continue
  for b in $(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$REPO/bench/cases/$CASE/context/Dockerfile" | sort -u); do
    _dy inspect "$b" >/dev/null 2>&1 || peer_dockyard_import "$b"
  done
done
ctx=$W/ctx/$CASE-export
rm -rf "$ctx"; mkdir -p "$ctx"; cp -a "$REPO/bench/cases/$CASE/context/." "$ctx/"
[ -x "$REPO/bench/cases/$CASE/prepare.sh" ] && (cd "$ctx" && "$REPO/bench/cases/$CASE/prepare.sh")
echo "peer,run,what,wall_s,size_bytes,mb_per_s,rc" > "$CSV"
tmpd=$(mktemp -d "$W/export.XXXXXX")
trap 'rm -rf "$tmpd"' EXIT

export_cmd() {  # export_cmd PEER WHAT TAG RUN -> CMD/CMD_ENV (like the peers' _cmd)
  local peer=$1 what=$2 tag=$3 run=$4 dest="$REG/bench-export/$CASE-$1-$(date +%s%N)"
  CMD_ENV=() AFTER=(true)
  case $peer:$what in
    dockyard:oci)  CMD_ENV=(PYTHONDONTWRITEBYTECODE= "PYTHONPYCACHEPREFIX=$_DY_PYCACHE")
                   CMD=("$_DY_BIN" --root "$_DY_ROOT" save --format oci -o "$tmpd/$run.tar" "$tag") ;;
    dockyard:push) CMD_ENV=(PYTHONDONTWRITEBYTECODE= "PYTHONPYCACHEPREFIX=$_DY_PYCACHE")
                   CMD=("$_DY_BIN" --root "$_DY_ROOT" push -q "$tag" "$dest") ;;
    docker_*:oci)  CMD_ENV=(DOCKER_HOST="$(docker_host overlay2)")
                   CMD=("$DOCKER_BIN" save -o "$tmpd/$run.tar" "$tag") ;;
    docker_*:push) _dk "$peer" tag "$tag" "$dest" >/dev/null
                   CMD_ENV=(DOCKER_HOST="$(docker_host overlay2)")
                   CMD=("$DOCKER_BIN" push "$dest")
                   AFTER=(_dk "$peer" rmi "$dest") ;;
    buildah_*:oci)  # shellcheck disable=SC2207
                   CMD=(buildah $(_cs_flags "$peer") push -q "$tag" "oci-archive:$tmpd/$run.tar:$tag") ;;
    buildah_*:push) # shellcheck disable=SC2207
                   CMD=(buildah $(_cs_flags "$peer") push -q --tls-verify=false "$tag" "docker://$dest") ;;
    *) echo "no $what for $peer" >&2; return 1 ;;
  esac
}

for ((run = 1; run <= RUNS; run++)); do
  for peer in $PEERS; do
    tag="bench/$CASE:$peer"
    for what in oci push; do
      # a fresh cold build (untimed) before each export: dockyard keeps the compressed
      # layers an export made, so a push right after an OCI export would not compress
      "peer_${peer}_reset" "$tag"
      "peer_${peer}_cmd" "$ctx" "$tag"
      env "${CMD_ENV[@]}" "${CMD[@]}" > "$W/logs/export/$peer.build.$what.$run.log" 2>&1 \
        || { log "build FAILED: $peer #$run"; continue; }
      read -r size _ < <("peer_${peer}_inspect" "$tag"; echo)
      export_cmd "$peer" "$what" "$tag" "$run" || continue
      tf=$(mktemp)
      /usr/bin/time -f '%e' -o "$tf" env "${CMD_ENV[@]}" "${CMD[@]}" \
        > "$W/logs/export/$peer.$what.$run.log" 2>&1
      rc=$?
      "${AFTER[@]}" >/dev/null 2>&1 || true
      wall=$(tail -1 "$tf"); rm -f "$tf" "$tmpd/$run.tar"
      mbs=$(python3 -c "print(f'{$size / 1e6 / max($wall, 0.01):.1f}')")
      echo "$peer,$run,$what,$wall,$size,$mbs,$rc" >> "$CSV"
      printf '  %-16s %-5s #%s %6ss %8s MB/s rc=%s\n' "$peer" "$what" "$run" "$wall" "$mbs" "$rc" >&2
    done
  done
done
python3 - "$CSV" <<'PY'
import csv, statistics, sys
from collections import defaultdict
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rc"] == "0"]
g = defaultdict(list)
for r in rows:
    g[(r["peer"], r["what"])].append(r)
print("| peer | export | median s | MB of layers (uncompressed) | median MB/s |")
print("|---|---|---|---|---|")
for (peer, what), rs in g.items():
    if peer.startswith("docker_") and what == "oci":
        what = "docker save (no OCI exporter)"
    print(f"| {peer} | {what} | {statistics.median(float(r['wall_s']) for r in rs):.2f} | "
          f"{int(rs[-1]['size_bytes']) / 1e6:.1f} | {statistics.median(float(r['mb_per_s']) for r in rs):.0f} |")
PY
