#!/usr/bin/env bash
# The extra bases of the scale cases (issue 18), made locally and imported everywhere the
# same way /work/shared/peers/setup.sh does it for busybox and debian (run that first, with
# the same PEERS_WORK / PEERS_RUN / PEERS_REGISTRY / PEERS_EXTRA):
#   bigroot:latest         busybox + 1 GiB in /data (16,384 files; bases/mk-bigroot.py)
#   debian-python:bookworm debootstrap minbase + python3 + python3-pip (the shared
#                          mk-debian.sh with INCLUDE=python3,python3-pip; from the apt mirror
#                          this machine's sources name, like the shared debian base)
# Each rootfs tar -> OCI archive $W/bases/NAME.oci.tar (FROM scratch + ADD, buildah in the
# seed store) -> the loopback registry (skopeo) -> every available peer's import function
# (docker/buildah/podman pull from the registry, dockyard loads the OCI archive).
# Idempotent. env: BASES (default "bigroot debian-python"), SHARED (default /work/shared/peers)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-/work/shared/peers}
export PEERS_EXTRA="${PEERS_EXTRA:-$REPO/bench/peers/dockyard.sh}"
. "$SHARED/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
registry_up || { echo "registry $REG is not up: run $SHARED/setup.sh first" >&2; exit 1; }
[ -s "$W/bases/busybox-rootfs.tar" ] || { echo "no busybox base: run $SHARED/setup.sh first" >&2; exit 1; }
mkdir -p "$W/bases" "$W/logs"

mk_rootfs() {  # mk_rootfs NAME -> $W/bases/NAME-rootfs.tar
  local out="$W/bases/$1-rootfs.tar"
  [ -s "$out" ] && return 0
  case $1 in
    bigroot)
      log "making the bigroot rootfs (busybox + 1 GiB)"
      python3 "$REPO/bench/bases/mk-bigroot.py" "$W/bases/busybox-rootfs.tar" "$out.tmp" ;;
    debian-python)
      log "making debian bookworm minbase + python3 + pip with debootstrap (1-3 min)"
      INCLUDE=python3,python3-pip "$SHARED/bases/mk-debian.sh" "$out.tmp" \
        > "$W/logs/debootstrap-python.log" 2>&1 || { tail -20 "$W/logs/debootstrap-python.log" >&2; exit 1; } ;;
    *) echo "unknown base $1" >&2; exit 1 ;;
  esac
  mv "$out.tmp" "$out"
}

SEED=$(cstore seed vfs)
mk_oci() {  # mk_oci NAME:TAG ROOTFS.tar (as setup.sh does it)
  local ref=$1 tar=$2 out="$W/bases/${1%%:*}.oci.tar"
  [ -s "$out" ] && [ "$out" -nt "$tar" ] && return 0
  log "building OCI archive $out"
  local ctx; ctx=$(mktemp -d)
  ln "$tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$tar" "$ctx/rootfs.tar"
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/sh"]\n' > "$ctx/Dockerfile"
  # shellcheck disable=SC2086
  buildah $SEED bud -q --isolation chroot -t "localhost/$ref" "$ctx" >/dev/null
  rm -f "$out"
  # shellcheck disable=SC2086
  buildah $SEED push -q "localhost/$ref" "oci-archive:$out:$ref"
  # shellcheck disable=SC2086
  buildah $SEED rmi -f "localhost/$ref" >/dev/null 2>&1 || true
  rm -rf "$ctx"
}

for name in ${BASES:-bigroot debian-python}; do
  case $name in bigroot) ref=bigroot:latest ;; debian-python) ref=debian-python:bookworm ;; esac
  mk_rootfs "$name"
  mk_oci "$ref" "$W/bases/$name-rootfs.tar"
  skopeo copy -q --dest-tls-verify=false "oci-archive:$W/bases/$name.oci.tar" "docker://$REG/$ref"
  for peer in ${PEERS:-$ALL_PEERS}; do
    "peer_${peer}_available" || continue
    "peer_${peer}_import" "$ref"
    log "peer $peer: $ref imported"
  done
done
log "scale bases ready"
