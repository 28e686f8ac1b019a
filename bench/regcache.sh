#!/usr/bin/env bash
# The shared build cache's speed cases (issue 15), each a ratio against a peer timed in the
# same run, interleaved, RUNS times (median):
#
#   export    cache export of the bigctx image with mode=max, to a new repository of the
#             loopback registry, after a cold untimed build (so nothing is compressed or
#             uploaded yet):  `dockyard build --cache-to type=registry,ref=..,mode=max`
#             (the build itself is a fully cached rebuild, a few ms; the row also gives the
#             export step's own time)  against  `skopeo copy` of the same image, from the
#             uncompressed OCI layout dockyard saves, to a new repository (skopeo gzips the
#             layers as it pushes, as dockyard's export must).       target: <= 0.5x
#   export2   the same export again to the same ref: nothing to compress or upload (HEADs
#             only); reported against the same skopeo median, for information.
#   floor     (with export) the registry's own floor for that export: one `curl -T` of the
#             image's largest blob (the big/ layer's gzip blob, already compressed, from the
#             store the export just filled) to a new repository, as a single PUT. No client
#             can push the image faster than that one stream goes; reported against skopeo.
#   fresh     a fresh machine's fully cached build from the registry cache: a new store with
#             only the bases loaded (untimed), then `dockyard build --cache-from ...`
#             against BuildKit (dockerd 20.10) building with `--cache-from` of the image it
#             pushed built with BUILDKIT_INLINE_CACHE=1, after `docker builder prune -af`
#             and `docker image rm` of the built image (bases stay).   target: <= 0.5x
#   push/pull a 300 MB image of 5 layers (60 MB of incompressible data each, case
#             regcache-300mb), to/from a new repository:  `dockyard push` of a freshly built
#             image (compressing its layers) against `skopeo copy` from its uncompressed OCI
#             layout (compressing them); `dockyard pull` into an empty store against
#             `skopeo copy docker://... oci:DIR`.                      target: <= 1.0x
#
# Run after the peers' setup (as bench/README.md says: PEERS_EXTRA=$PWD/bench/peers/dockyard.sh
# ../shared/peers/setup.sh), as root. Output: OUT/regcache.csv and a table of medians and
# ratios on stdout. env: RUNS (3), CASE (bigctx, from the shared cases; or multistage), OUT,
# WHAT (default "export fresh pushpull").
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared/peers}
[ -d "$SHARED" ] || SHARED=/work/shared/peers
export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh}"
. "$SHARED/lib.sh"
RUNS=${RUNS:-3}
CASE=${CASE:-bigctx}
WHAT=${WHAT:-export fresh pushpull}
OUT=${OUT:-$W/results}
CSV=$OUT/regcache.csv
mkdir -p "$OUT" "$W/logs/regcache" "$W/ctx"
registry_up || { echo "no registry at $REG: run the peers' setup.sh first" >&2; exit 1; }
DYENV=(PYTHONDONTWRITEBYTECODE= "PYTHONPYCACHEPREFIX=$_DY_PYCACHE" DOCKYARD_NO_QUICK=1)
tmpd=$(mktemp -d "$W/regcache.XXXXXX")
trap 'rm -rf "$tmpd"' EXIT
echo "what,peer,run,wall_s,step_s,rc" > "$CSV"

# skopeo (containers/image) remembers which compressed blob it pushed for an uncompressed
# layer, and where (its blob info cache): a later copy of the same layer to a new repository
# mounts that blob instead of compressing and uploading it (0.15 s against 5 s). dockyard
# starts from a fresh store every run, so skopeo must forget too: the cache goes before
# every timed skopeo copy (untimed).
SKOPEO_BLOB_CACHE=${SKOPEO_BLOB_CACHE:-/var/lib/containers/cache/blob-info-cache-v1.boltdb}
forget_skopeo() { rm -f "$SKOPEO_BLOB_CACHE"; }

case_dir() { [ -d "$REPO/bench/cases/$1" ] && echo "$REPO/bench/cases/$1" || echo "$SHARED/cases/$1"; }
prepare_ctx() {  # prepare_ctx CASE -> prints the context dir (made once per run of this script)
  local src ctx=$W/ctx/regcache-$1
  src=$(case_dir "$1")
  if [ ! -d "$ctx" ]; then
    mkdir -p "$ctx"; cp -a "$src/context/." "$ctx/"
    [ -x "$src/prepare.sh" ] && (cd "$ctx" && "$src/prepare.sh") >/dev/null
  fi
  echo "$ctx"
}
bases_of() { sed -n 's/^FROM \([^ ]*\).*/\1/p' "$1/Dockerfile" | grep -v '^scratch$' | sort -u; }
load_bases() {  # load_bases ROOT CTX: the case's bases into a dockyard store (untimed)
  local b
  for b in $(bases_of "$2"); do
    _DY_ROOT=$1 _dy inspect "$b" >/dev/null 2>&1 && continue
    _DY_ROOT=$1 peer_dockyard_import "$b"
  done
}
timed() {  # timed WHAT PEER RUN LOG CMD... -> a CSV row; the log keeps the output
  local what=$1 peer=$2 run=$3 logf=$4 tf wall rc step; shift 4
  tf=$(mktemp)
  /usr/bin/time -f '%e' -o "$tf" "$@" > "$logf" 2>&1
  rc=$?
  wall=$(tail -1 "$tf"); rm -f "$tf"
  # dockyard's own step time of a cache export ("#N DONE 1.2s" after "exporting cache")
  step=$(awk '/ exporting cache to /{n=$1} n && $1==n && $2=="DONE"{sub("s","",$3); print $3}' "$logf" | tail -1)
  echo "$what,$peer,$run,$wall,${step:-},$rc" >> "$CSV"
  printf '  %-9s %-16s #%s %7ss %s rc=%s\n' "$what" "$peer" "$run" "$wall" "${step:+(export step ${step}s)}" "$rc" >&2
}
stamp() { date +%s%N; }

# The largest blob of a store, uploaded as one monolithic PUT (POST for the upload URL
# untimed, then the PUT with the digest timed): what the registry itself takes for it.
upload_floor() {  # upload_floor ROOT RUN N
  local blob loc sep
  blob=$(find "$1/blobs/sha256" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  [ -n "$blob" ] || { log "no blob for the floor (run $2)"; return; }
  loc=$(curl -sS -D - -o /dev/null -X POST "http://$REG/v2/bench-regcache/$CASE-floor-$3/blobs/uploads/" \
        | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
  case $loc in http*) ;; *) loc="http://$REG$loc" ;; esac
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  timed floor curl "$2" "$W/logs/regcache/floor.$2.log" \
    curl -sS -f -T "$blob" -H 'Content-Type: application/octet-stream' \
    "${loc}${sep}digest=sha256:$(basename "$blob")"
}

# ------------------------------------------------------------------ export / export2
bench_export() {
  local ctx root tag run ref n layout
  ctx=$(prepare_ctx "$CASE")
  root=$W/regcache-export-store
  tag=bench/regcache-$CASE:export
  for ((run = 1; run <= RUNS; run++)); do
    n=$(stamp)
    rm -rf "$root"; load_bases "$root" "$ctx"
    env "${DYENV[@]}" "$_DY_BIN" --root "$root" build -q -t "$tag" "$ctx" \
      > "$W/logs/regcache/export.build.$run.log" 2>&1 || { log "build FAILED (export #$run)"; continue; }
    ref="$REG/bench-regcache/$CASE-cache-$n:cache"
    timed export dockyard "$run" "$W/logs/regcache/export.dockyard.$run.log" \
      env "${DYENV[@]}" "$_DY_BIN" --root "$root" build --progress plain -t "$tag" \
      --cache-to "type=registry,ref=$ref,mode=max" "$ctx"
    timed export2 dockyard "$run" "$W/logs/regcache/export2.dockyard.$run.log" \
      env "${DYENV[@]}" "$_DY_BIN" --root "$root" build --progress plain -t "$tag" \
      --cache-to "type=registry,ref=$ref,mode=max" "$ctx"
    upload_floor "$root" "$run" "$n"
    # skopeo: the same image, uncompressed OCI layout (untimed), pushed with gzip (timed)
    layout=$tmpd/layout-$run
    env "${DYENV[@]}" "$_DY_BIN" --root "$root" build -q -t "$tag" \
      -o "type=oci,dest=$layout,tar=false,compression=uncompressed" "$ctx" >/dev/null 2>&1 \
      || { log "OCI layout FAILED (export #$run)"; continue; }
    forget_skopeo
    timed export skopeo "$run" "$W/logs/regcache/export.skopeo.$run.log" \
      skopeo copy -q --dest-tls-verify=false "oci:$layout" \
      "docker://$REG/bench-regcache/$CASE-skopeo-$n:1"
    rm -rf "$layout"
  done
}

# ------------------------------------------------------------------ fresh
bench_fresh() {
  local ctx seed root ref tag inline run
  ctx=$(prepare_ctx "$CASE")
  seed=$W/regcache-fresh-seed
  ref="$REG/bench-regcache/$CASE-fresh:cache"
  tag=bench/regcache-$CASE:fresh
  inline="$REG/bench-regcache/$CASE-inline:1"
  rm -rf "$seed"; load_bases "$seed" "$ctx"
  env "${DYENV[@]}" "$_DY_BIN" --root "$seed" build -q -t "$tag" \
    --cache-to "type=registry,ref=$ref,mode=max" "$ctx" > "$W/logs/regcache/fresh.seed.log" 2>&1 \
    || { log "seed build FAILED (fresh)"; return; }
  local buildkit=0
  if peer_docker_buildkit_available 2>/dev/null; then
    buildkit=1
    for b in $(bases_of "$ctx"); do _dk docker_buildkit image inspect "$b" >/dev/null 2>&1 \
      || peer_docker_buildkit_import "$b"; done
    _dk docker_buildkit builder prune -af >/dev/null 2>&1
    DOCKER_BUILDKIT=1 _dk docker_buildkit build -q --network host \
      --build-arg BUILDKIT_INLINE_CACHE=1 -t "$inline" "$ctx" > "$W/logs/regcache/fresh.bk-seed.log" 2>&1 \
      && _dk docker_buildkit push "$inline" >> "$W/logs/regcache/fresh.bk-seed.log" 2>&1 \
      || { log "BuildKit seed FAILED (fresh)"; buildkit=0; }
  else
    log "docker_buildkit is not available: fresh runs dockyard only"
  fi
  for ((run = 1; run <= RUNS; run++)); do
    root=$W/regcache-fresh-store
    rm -rf "$root"; load_bases "$root" "$ctx"
    timed fresh dockyard "$run" "$W/logs/regcache/fresh.dockyard.$run.log" \
      env "${DYENV[@]}" "$_DY_BIN" --root "$root" build --progress plain -t "$tag" \
      --cache-from "type=registry,ref=$ref" "$ctx"
    if [ "$buildkit" = 1 ]; then
      _dk docker_buildkit builder prune -af >/dev/null 2>&1
      _dk docker_buildkit image rm -f "$inline" "$tag" >/dev/null 2>&1
      timed fresh docker_buildkit "$run" "$W/logs/regcache/fresh.buildkit.$run.log" \
        env DOCKER_HOST="$(docker_host overlay2)" DOCKER_BUILDKIT=1 "$DOCKER_BIN" build \
        --progress=plain --network host --cache-from "$inline" -t "$tag" "$ctx"
    fi
  done
}

# ------------------------------------------------------------------ push / pull
bench_pushpull() {
  local ctx root tag run n dest layout pulled
  ctx=$(prepare_ctx regcache-300mb)
  root=$W/regcache-pp-store
  tag=bench/regcache-300mb:1
  for ((run = 1; run <= RUNS; run++)); do
    n=$(stamp)
    rm -rf "$root"; load_bases "$root" "$ctx"
    env "${DYENV[@]}" "$_DY_BIN" --root "$root" build -q -t "$tag" "$ctx" \
      > "$W/logs/regcache/pp.build.$run.log" 2>&1 || { log "build FAILED (push #$run)"; continue; }
    dest="$REG/bench-regcache/pp-dockyard-$n:1"
    timed push dockyard "$run" "$W/logs/regcache/push.dockyard.$run.log" \
      env "${DYENV[@]}" "$_DY_BIN" --root "$root" push -q "$tag" "$dest"
    layout=$tmpd/pp-layout-$run
    env "${DYENV[@]}" "$_DY_BIN" --root "$root" build -q -t "$tag" \
      -o "type=oci,dest=$layout,tar=false,compression=uncompressed" "$ctx" >/dev/null 2>&1 \
      || { log "OCI layout FAILED (push #$run)"; continue; }
    forget_skopeo
    timed push skopeo "$run" "$W/logs/regcache/push.skopeo.$run.log" \
      skopeo copy -q --dest-tls-verify=false "oci:$layout" "docker://$REG/bench-regcache/pp-skopeo-$n:1"
    rm -rf "$layout"
    pulled=$W/regcache-pp-pulled
    rm -rf "$pulled"
    timed pull dockyard "$run" "$W/logs/regcache/pull.dockyard.$run.log" \
      env "${DYENV[@]}" "$_DY_BIN" --root "$pulled" pull -q "$dest"
    rm -rf "$pulled" "$tmpd/pulled-oci"
    forget_skopeo
    timed pull skopeo "$run" "$W/logs/regcache/pull.skopeo.$run.log" \
      skopeo copy -q --src-tls-verify=false "docker://$dest" "oci:$tmpd/pulled-oci"
    rm -rf "$pulled" "$tmpd/pulled-oci"
  done
}

for what in $WHAT; do "bench_$what"; done

python3 - "$CSV" <<'PY'
import csv, statistics, sys
from collections import defaultdict
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rc"] == "0"]
med = defaultdict(list)
for r in rows:
    med[(r["what"], r["peer"])].append(float(r["wall_s"]))
peer_of = {"export": "skopeo", "export2": "skopeo", "fresh": "docker_buildkit",
           "push": "skopeo", "pull": "skopeo"}
target = {"export": "<= 0.5x", "export2": "(info)", "fresh": "<= 0.5x", "push": "<= 1.0x",
          "pull": "<= 1.0x"}
print("| case | dockyard median s | peer | peer median s | ratio | target |")
print("|---|---|---|---|---|---|")
for what in ("export", "export2", "fresh", "push", "pull"):
    mine = med.get((what, "dockyard"))
    base = "export" if what == "export2" else what
    theirs = med.get((base, peer_of[what]))
    if not mine:
        continue
    m = statistics.median(mine)
    if theirs:
        t = statistics.median(theirs)
        print(f"| {what} | {m:.2f} | {peer_of[what]} | {t:.2f} | {m / max(t, 0.001):.2f}x | {target[what]} |")
    else:
        print(f"| {what} | {m:.2f} | {peer_of[what]} | - | - | {target[what]} |")
floor, sk = med.get(("floor", "curl")), med.get(("export", "skopeo"))
if floor and sk:
    f, t = statistics.median(floor), statistics.median(sk)
    print(f"\nthe registry's floor for the export: one PUT of the largest blob {f:.2f} s = "
          f"{f / max(t, 0.001):.2f}x of skopeo's export ({t:.2f} s)"
          + (": the 0.5x target is below what the registry takes for that one blob"
             if f > 0.5 * t else ""))
PY
