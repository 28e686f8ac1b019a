#!/usr/bin/env bash
# Build the distroless example and its builder stage, run it, and compare their sizes.
# usage: examples/distroless/build.sh [TAG]      (default TAG: linkcount:distroless)
# The store is dockyard's default ($DOCKYARD_ROOT, else /var/lib/dockyard as root); the bases
# come from scripts/make-bases.sh. DOCKYARD overrides the command.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tag=${1:-linkcount:distroless}
if [ -z "${DOCKYARD:-}" ]; then
  DOCKYARD=dockyard
  [ -x "$repo/.venv/bin/dockyard" ] && DOCKYARD=$repo/.venv/bin/dockyard
fi
ctx=$repo/examples/multistage

"$DOCKYARD" build --progress plain -t "$tag-builder" --target builder -f "$here/Dockerfile" "$ctx"
"$DOCKYARD" build --progress plain -t "$tag" -f "$here/Dockerfile" "$ctx"
echo "== run (as user 65532, no shell in the image)"
"$DOCKYARD" run "$tag"
size() { "$DOCKYARD" inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])'; }
b=$(size "$tag-builder"); f=$(size "$tag")
echo "builder stage: $((b / 1024)) KiB; distroless image: $((f / 1024)) KiB ($((b / f))x smaller)"
