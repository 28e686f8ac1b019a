# dockyard as an ordinary user (rootless, docs/rootless.md): the peer `dockyard_rootless` of
# /work/shared/peers, beside bench/peers/dockyard.sh (root), so that both and BuildKit are
# timed in the same run (issue 16: rootless costs at most 1.2x root):
#   P="$PWD/bench/peers/dockyard.sh $PWD/bench/peers/dockyard-rootless.sh"
#   PEERS_EXTRA="$P" /work/shared/peers/setup.sh
#   PEERS_EXTRA="$P" PEERS="dockyard dockyard_rootless docker_buildkit" \
#     CASES="multistage bigctx" bench/run.sh
#
# Runs as root and switches to the user for each timed build with setpriv (no PAM session,
# as cheap as a fork+exec). Made on first use, kept between runs (everything under $_DYR):
# - the user DOCKYARD_ROOTLESS_USER (default dybench; useradd, 65,536 subordinate ids);
# - a virtualenv of the system python that user can read, with a copy of src/dockyard
#   (tests/rootless_support.py: make_readable_venv), made again when src/ changed;
# - its store ($_DYR/store), XDG_RUNTIME_DIR and byte-code cache.
# The same python for both peers: the repo's .venv may use another interpreter (a pyenv
# build under /root), so give the root peer this venv too for a like-for-like ratio:
#   DOCKYARD_BIN=/var/tmp/dockyard-bench-rootless/venv/bin/dockyard
# Contexts ($W/ctx/CASE) are read in place: $W must be readable by the user (the shared
# setup's default /var/tmp/peers-bench is).

_DYR_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_DYR=${DOCKYARD_ROOTLESS_BENCH:-/var/tmp/dockyard-bench-rootless}
_DYR_USER=${DOCKYARD_ROOTLESS_USER:-dybench}
_DYR_BIN=$_DYR/venv/bin/dockyard

_dyr_prepare() {                # the user, its venv and directories (idempotent)
  if ! id -u "$_DYR_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/sh --user-group "$_DYR_USER" || return 1
  fi
  local uid gid; uid=$(id -u "$_DYR_USER"); gid=$(id -g "$_DYR_USER")
  if ! grep -q "^$_DYR_USER:" /etc/subuid 2>/dev/null || ! grep -q "^$_DYR_USER:" /etc/subgid 2>/dev/null; then
    local start
    start=$(python3 - <<'PY'
used = []
for db in ("/etc/subuid", "/etc/subgid"):
    try:
        lines = open(db).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            used.append((int(parts[1]), int(parts[2])))
start = 500000
while any(s < start + 65536 and start < s + n for s, n in used):
    start += 65536
print(start)
PY
)
    usermod --add-subuids "$start-$((start + 65535))" --add-subgids "$start-$((start + 65535))" \
      "$_DYR_USER" || return 1
  fi
  mkdir -p "$_DYR"
  chmod 755 "$_DYR"
  if [ ! -x "$_DYR_BIN" ] || [ -n "$(find "$_DYR_REPO/src" -newer "$_DYR/venv.stamp" -name '*.py' -print -quit 2>/dev/null)" ]; then
    rm -rf "$_DYR/venv" "$_DYR/pycache"
    "$_DYR_REPO/.venv/bin/python" -c '
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/tests")
from rootless_support import make_readable_venv
make_readable_venv(Path(sys.argv[2]))' "$_DYR_REPO" "$_DYR" || return 1
    touch "$_DYR/venv.stamp"
  fi
  install -d -o "$uid" -g "$gid" -m 700 "$_DYR/store" "$_DYR/xdg-run" "$_DYR/pycache"
}

_dyr_as_user() {                # the argv prefix that runs a command as the user
  local uid gid home; uid=$(id -u "$_DYR_USER"); gid=$(id -g "$_DYR_USER")
  home=$(getent passwd "$_DYR_USER" | cut -d: -f6)
  _DYR_PREFIX=(setpriv "--reuid=$uid" "--regid=$gid" --init-groups --
               env -i "HOME=$home" "USER=$_DYR_USER" "LOGNAME=$_DYR_USER" "LANG=C.UTF-8"
               "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
               "XDG_RUNTIME_DIR=$_DYR/xdg-run" PYTHONDONTWRITEBYTECODE=
               "PYTHONPYCACHEPREFIX=$_DYR/pycache")
}

_dyr() {
  _dyr_as_user
  "${_DYR_PREFIX[@]}" "$_DYR_BIN" --root "$_DYR/store" "$@"
}

peer_dockyard_rootless_available() {  # as the user: info says rootless, build exists
  _dyr_prepare >/dev/null 2>&1 || return 1
  _dyr info --format json 2>/dev/null | grep -q '"rootless": true'
}

peer_dockyard_rootless_cmd() {  # CTX TAG -> CMD / CMD_ENV, timed as one process
  _dyr_as_user
  CMD_ENV=()
  CMD=("${_DYR_PREFIX[@]}" "$_DYR_BIN" --root "$_DYR/store" build --progress plain
       -f "$1/Dockerfile" -t "$2" "$1")
}

peer_dockyard_rootless_reset() {  # as peer_dockyard_reset: the tag, cache, untagged images
  _dyr_prepare >/dev/null 2>&1 || true
  _dyr rmi "$1" >/dev/null 2>&1 || true
  _dyr cache prune --all >/dev/null 2>&1 || true
  _dyr prune --all >/dev/null 2>&1 || true
}

peer_dockyard_rootless_inspect() {  # TAG -> "SIZE_BYTES LAYER_COUNT"
  _dyr inspect "$1" 2>/dev/null | python3 -c '
import json, sys
info = json.load(sys.stdin)
info = info[0] if isinstance(info, list) else info
layers = (info.get("RootFS") or info.get("rootfs") or {}).get("Layers") or (info.get("rootfs") or {}).get("diff_ids") or []
print(info.get("Size", 0), len(layers))'
}

peer_dockyard_rootless_import() {  # NAME:TAG from the OCI archive setup.sh made
  _dyr_prepare || return 1
  local archive="$W/bases/${1%%:*}.oci.tar" tmp
  # the user reads a copy of its own (the bases folder may be root's only)
  tmp=$(mktemp "$_DYR/base-XXXXXX.tar")
  cp "$archive" "$tmp" && chmod 644 "$tmp"
  _dyr load -i "$tmp" >/dev/null
  local rc=$?
  rm -f "$tmp"
  return $rc
}
