# dockyard as a peer of /work/shared/peers (setup.sh / bench.sh), sourced by their lib.sh:
#   PEERS_EXTRA=$PWD/bench/peers/dockyard.sh /work/shared/peers/setup.sh
#   PEERS_EXTRA=$PWD/bench/peers/dockyard.sh PEERS="dockyard docker_buildkit" /work/shared/peers/bench.sh
# Uses the repo's virtualenv (scripts/setup.sh makes it) and a private store at $W/dockyard.
# DOCKYARD_BIN overrides the executable, DOCKYARD_BENCH_ROOT the store (default $W/dockyard).

_DY_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_DY_BIN=${DOCKYARD_BIN:-$_DY_REPO/.venv/bin/dockyard}
_DY_ROOT=${DOCKYARD_BENCH_ROOT:-$W/dockyard}
_dy() { "$_DY_BIN" --root "$_DY_ROOT" "$@"; }

peer_dockyard_available() {     # the CLI runs and its build command exists
  [ -x "$_DY_BIN" ] && _dy build --help >/dev/null 2>&1
}

# An installed dockyard runs from byte-compiled modules (pip compiles them at install time).
# This machine sets PYTHONDONTWRITEBYTECODE=1, which would make every timed run compile all
# of dockyard from source (~0.1 s of a no-op rebuild); keep the .pyc files out of the repo.
_DY_PYCACHE=${DOCKYARD_PYCACHE:-/var/tmp/dockyard-pycache}

peer_dockyard_cmd() {           # CTX TAG -> CMD / CMD_ENV, timed as one process
  CMD_ENV=(PYTHONDONTWRITEBYTECODE= "PYTHONPYCACHEPREFIX=$_DY_PYCACHE")
  CMD=("$_DY_BIN" --root "$_DY_ROOT" build --progress plain -f "$1/Dockerfile" -t "$2" "$1")
}

# TAG -> drop the image, untagged images and all build cache; bases stay tagged. The same as
# the docker peers' reset (rmi -f, image prune -f, builder prune -af): earlier runs' images,
# left untagged when the tag moved, would otherwise keep their snapshots forever.
peer_dockyard_reset() {
  _dy rmi "$1" >/dev/null 2>&1 || true
  _dy cache prune --all >/dev/null 2>&1 || true
  _dy prune --all >/dev/null 2>&1 || true
}

peer_dockyard_inspect() {       # TAG -> "SIZE_BYTES LAYER_COUNT"
  _dy inspect "$1" 2>/dev/null | python3 -c '
import json, sys
info = json.load(sys.stdin)
info = info[0] if isinstance(info, list) else info
layers = (info.get("RootFS") or info.get("rootfs") or {}).get("Layers") or (info.get("rootfs") or {}).get("diff_ids") or []
print(info.get("Size", 0), len(layers))'
}

peer_dockyard_import() {        # NAME:TAG -> usable in FROM, from the OCI archive setup.sh made
  local archive="$W/bases/${1%%:*}.oci.tar"
  _dy load -i "$archive" >/dev/null && return 0
  # Fallback: the rootfs tarball, as `dockyard import`.
  _dy import "$W/bases/${1%%:*}-rootfs.tar" "$1" >/dev/null
}
