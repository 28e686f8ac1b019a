#!/usr/bin/env bash
# The builder pattern, daemonless: build a compile image, copy the binary out of it with
# `dockyard cp`, then build the runtime image from a context holding just that binary.
# examples/multistage does the same in one Dockerfile.
#
# usage: examples/builder-pattern/build.sh [TAG]     (default TAG: linkcount:builder-pattern)
# The store is dockyard's default ($DOCKYARD_ROOT, else /var/lib/dockyard as root); the bases
# come from scripts/make-bases.sh. DOCKYARD overrides the command.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tag=${1:-linkcount:builder-pattern}
if [ -z "${DOCKYARD:-}" ]; then
  DOCKYARD=dockyard
  [ -x "$repo/.venv/bin/dockyard" ] && DOCKYARD=$repo/.venv/bin/dockyard
fi
src=$repo/examples/multistage/src
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. build the compile image"
"$DOCKYARD" build --progress plain -t linkcount-build:latest -f "$here/Dockerfile.build" "$src"

echo "== 2. copy the binary out of it"
"$DOCKYARD" cp linkcount-build:latest:/out/linkcount "$work/linkcount"
cp "$here/Dockerfile" "$src/sample.html" "$work/"
ls -l "$work/linkcount"

echo "== 3. build the runtime image from the binary"
"$DOCKYARD" build --progress plain -t "$tag" "$work"
echo "built $tag"
