#!/usr/bin/env bash
# The whole dockyard story in one command, on a fresh Debian machine, as root:
#   1. install what it needs (scripts/setup.sh: apt packages and the .venv)
#   2. make the base images debian:bookworm and busybox:latest locally (scripts/make-bases.sh)
#   3. build examples/multistage (compile in Debian with gcc, ship the static binary on busybox)
#   4. run the image with `dockyard run`
#   5. rebuild with no change (every step CACHED), change one source file and rebuild (the miss
#      is explained)
#   6. compare the sizes of the builder stage and the final image
# The example is built from a temporary copy, so the checkout is never changed.
# The store is $DOCKYARD_ROOT, by default /var/lib/dockyard (dockyard's own default as root),
# so `dockyard images` shows the results afterwards.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it installs packages, mounts overlays and runs containers)" >&2
  exit 1
fi
export DOCKYARD_ROOT=${DOCKYARD_ROOT:-/var/lib/dockyard}
DOCKYARD=$repo/.venv/bin/dockyard
PY=$repo/.venv/bin/python
if [ -t 1 ]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi

step "1/6 setup: apt packages and the virtualenv (scripts/setup.sh)"
scripts/setup.sh
export DOCKYARD

step "2/6 base images debian:bookworm and busybox:latest in $DOCKYARD_ROOT (scripts/make-bases.sh)"
scripts/make-bases.sh "$DOCKYARD_ROOT"
"$DOCKYARD" images

work=$(mktemp -d /tmp/dockyard-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a examples/multistage "$work/"
ctx=$work/multistage
meta=$work/metadata.json

# "N/M steps CACHED" from a --metadata-file document.
cached_summary() {
  "$PY" - "$meta" <<'EOF'
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
hits = sum(1 for s in steps if s["cached"])
print(f"{hits}/{len(steps)} steps CACHED")
EOF
}

step "3/6 build examples/multistage as linkcount:demo"
cat "$ctx/Dockerfile"
"$DOCKYARD" build --progress plain -t linkcount:demo --metadata-file "$meta" "$ctx"
echo "build: $(cached_summary)"

step "4/6 run it: dockyard run linkcount:demo"
"$DOCKYARD" run linkcount:demo

step "5/6 rebuild with no change, then change src/sample.html and rebuild"
"$DOCKYARD" build --progress quiet -t linkcount:demo --metadata-file "$meta" "$ctx" >/dev/null
echo "rebuild, nothing changed: $(cached_summary)"
sed -i 's|</ul>|  <li><a href="https://github.com/dockyard">added by the demo</a></li>\n</ul>|' \
  "$ctx/src/sample.html"
echo "changed src/sample.html (one more link); rebuilding:"
if ! "$DOCKYARD" build --progress plain -t linkcount:demo --metadata-file "$meta" "$ctx" \
    > "$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi
# Just the steps and their cache results: "CACHED", or "CACHE MISS: <why>".
grep -E '^#[0-9]+ (\[|CACHED|CACHE MISS)' "$work/build.log" | grep -v ' FROM ' || true
echo "rebuild after the change: $(cached_summary)"
"$DOCKYARD" run linkcount:demo

step "6/6 sizes: the builder stage against the final image"
"$DOCKYARD" build --progress quiet --target builder -t linkcount:demo-builder "$ctx" >/dev/null
"$DOCKYARD" inspect linkcount:demo-builder linkcount:demo | "$PY" -c '
import json, sys
builder, final = (img["Size"] for img in json.load(sys.stdin))
mb = lambda n: f"{n / 1e6:.1f} MB"
print(f"image sizes: builder stage (linkcount:demo-builder) {mb(builder)}, "
      f"final image (linkcount:demo) {mb(final)}: {builder / final:.0f}x smaller")
'
