#!/usr/bin/env bash
# A walk through dockyard's three cache rules, with the explain output of each miss.
# Works on a temporary copy of this directory, so the checkout is never changed.
#
# usage: examples/cache/walkthrough.sh
#   APT=1   use Dockerfile.apt (a real apt-get update; needs debian:bookworm and network)
# The store is dockyard's default ($DOCKYARD_ROOT, else /var/lib/dockyard as root); the
# busybox base comes from scripts/make-bases.sh. DOCKYARD overrides the command.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ -z "${DOCKYARD:-}" ]; then
  DOCKYARD=dockyard
  [ -x "$repo/.venv/bin/dockyard" ] && DOCKYARD=$repo/.venv/bin/dockyard
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$here/." "$work/"
ctx=$work/app
# A line unique to this run, so a second walkthrough in the same store starts from misses too.
printf 'walkthrough run %s\n' "$(date +%s.%N)" >> "$ctx/hello.txt"

# Build, showing only the steps and their cache results ("CACHED" or "CACHE MISS: why").
build() {  # build DOCKERFILE [ARGS...]
  local df=$1; shift
  echo "\$ dockyard build -f $df ${*:+$* }app"
  if ! "$DOCKYARD" build --progress plain -t cache-walkthrough -f "$work/$df" "$@" "$ctx" \
      > "$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    exit 1
  fi
  grep -E '^#[0-9]+ (\[|CACHED|CACHE MISS)' "$work/build.log" | grep -v ' FROM ' \
    | sed 's/^/    /' || true
}
say() { printf '\n== %s\n' "$*"; }

say "Rule 1: content, not times. First build:"
build Dockerfile.files
say "touch hello.txt (new mtime, same content): still cached"
touch "$ctx/hello.txt"
build Dockerfile.files
say "change hello.txt: the COPY misses and names the file; the RUN after it follows"
echo "one more line" >> "$ctx/hello.txt"
build Dockerfile.files

fetch=Dockerfile.fetch
[ -n "${APT:-}" ] && fetch=Dockerfile.apt
say "Rule 2: a RUN that fetches stays cached, even when what it fetched is stale"
build "$fetch"
build "$fetch"
say "--cache-ttl 2s refreshes RUN results older than that"
sleep 3
build "$fetch" --cache-ttl 2s
say "--no-cache refreshes everything"
build "$fetch" --no-cache

say "Rule 3: order. Install dependencies before COPY . ., first build of both orders:"
build Dockerfile.order-late
build Dockerfile.order-early
printf "print('hi from %s')\n" "$(date +%s.%N)" > "$ctx/main.py"
say "add main.py: the late order re-runs the slow install ..."
build Dockerfile.order-late
say "... the early order keeps it cached and only copies again"
build Dockerfile.order-early
