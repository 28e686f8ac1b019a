#!/usr/bin/env bash
# Make the base images the examples build FROM, without Docker Hub:
#   busybox:latest   Debian's busybox-static in an otherwise empty root filesystem, for two
#                    platforms (a multi-platform name): this machine's, and the foreign one
#                    (arm64 on amd64, else amd64) from busybox-static:<arch>, fetched with
#                    apt-get download (scripts/setup.sh adds the architecture to dpkg)
#   debian:bookworm  debootstrap --variant=minbase plus gcc, libc6-dev, ca-certificates and
#                    the aarch64 cross compiler, from the Debian mirror in this machine's apt
#                    sources
# Root filesystem tarballs are cached under $DOCKYARD_BASES (default /var/tmp/dockyard-bases)
# and imported with `dockyard import` into the store at ROOT unless it has them already.
#
# usage: scripts/make-bases.sh [ROOT]      (ROOT default: $DOCKYARD_ROOT, else /var/lib/dockyard)
#   ONLY=busybox|debian   make just one of them
#   MIRROR=URL            the Debian mirror (default: the first one in /etc/apt/sources*)
#   SUITE=bookworm        the Debian suite; the image is still tagged debian:$SUITE
#   INCLUDE=...           debootstrap --include list (default: gcc,libc6-dev,ca-certificates,
#                         gcc-aarch64-linux-gnu,libc6-dev-arm64-cross)
#   FOREIGN=arm64         the second platform of busybox:latest (a dpkg architecture; none:
#                         only this machine's)
#   DOCKYARD=...          the dockyard command (default: .venv/bin/dockyard of this checkout)
# Needs root (debootstrap, and the image store's ownership).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${1:-${DOCKYARD_ROOT:-/var/lib/dockyard}}
CACHE=${DOCKYARD_BASES:-/var/tmp/dockyard-bases}
DOCKYARD=${DOCKYARD:-$here/.venv/bin/dockyard}
SUITE=${SUITE:-bookworm}
INCLUDE=${INCLUDE:-gcc,libc6-dev,ca-certificates,gcc-aarch64-linux-gnu,libc6-dev-arm64-cross}
ONLY=${ONLY:-}
HOST_ARCH=$(dpkg --print-architecture)
if [ "$HOST_ARCH" = amd64 ]; then FOREIGN=${FOREIGN:-arm64}; else FOREIGN=${FOREIGN:-amd64}; fi
# Bump when a recipe changes: old cached tarballs are then simply not used.
RECIPE=2

log() { echo "make-bases: $*" >&2; }
die() { log "$*"; exit 1; }

[ -x "$DOCKYARD" ] || command -v "$DOCKYARD" >/dev/null 2>&1 \
  || die "no dockyard command at $DOCKYARD (run scripts/setup.sh first)"
mkdir -p "$CACHE"

has_image() { "$DOCKYARD" --root "$ROOT" inspect "$1" >/dev/null 2>&1; }

# Deterministic tar of a directory: sorted names, numeric owners, one clamped mtime.
pack() {  # pack DIR OUT.tar
  tar --sort=name --numeric-owner --xattrs --mtime='2024-01-01 00:00:00Z' --clamp-mtime \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$1" -cf "$2.part" .
  mv "$2.part" "$2"
}

static_busybox() {
  local bb
  bb=$(command -v busybox || true)
  [ -n "$bb" ] || die "busybox is not installed (apt-get install busybox-static)"
  # The image has no libc: only the static build works (ldd fails on a static binary).
  if ldd "$bb" >/dev/null 2>&1; then die "$bb is not static (apt-get install busybox-static)"; fi
  echo "$bb"
}

# The static busybox of a foreign architecture, from Debian's busybox-static:<arch>.
foreign_busybox() {  # foreign_busybox ARCH -> path of the binary (cached)
  local arch=$1 out tmp
  out=$CACHE/busybox-static-$arch
  if [ ! -s "$out" ]; then
    tmp=$(mktemp -d "$CACHE/deb.XXXXXX")
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download "busybox-static:$arch" >"$tmp/log" 2>&1) || {
      cat "$tmp/log" >&2; rm -rf "$tmp"
      die "apt-get download busybox-static:$arch failed (run scripts/setup.sh: it adds the $arch architecture to dpkg)"; }
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/bin/busybox" "$out.part" && mv "$out.part" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

qemu_for() {  # qemu_for ARCH -> the qemu-user-static binary that runs it
  local q
  case $1 in
    arm64) q=aarch64 ;; armhf) q=arm ;; amd64) q=x86_64 ;; i386) q=i386 ;; *) q=$1 ;;
  esac
  command -v "qemu-$q-static" || die "no qemu-$q-static (apt-get install qemu-user-static)"
}

busybox_path() {  # busybox_path [ARCH]
  local bb
  if [ -n "${1:-}" ]; then bb=$(foreign_busybox "$1"); else bb=$(static_busybox); fi
  echo "$CACHE/busybox-$(sha256sum "$bb" | cut -c1-16)-r$RECIPE.tar"
}

busybox_make() {  # busybox_make OUT.tar [ARCH]
  local bb out=$1 arch=${2:-} tmp r p run=""
  if [ -n "$arch" ]; then
    bb=$(foreign_busybox "$arch")
    run=$(qemu_for "$arch")  # only to list the applets
  else
    bb=$(static_busybox)
  fi
  if [ ! -s "$out" ]; then
    tmp=$(mktemp -d "$CACHE/busybox.XXXXXX")
    r=$tmp/rootfs
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,var/tmp,home}
    install -d -m 1777 "$r/tmp"
    install -m 0755 "$bb" "$r/bin/busybox"
    for p in $($run "$r/bin/busybox" --list-full); do
      [ "$p" = bin/busybox ] && continue
      mkdir -p "$r/$(dirname "$p")"
      ln -sf /bin/busybox "$r/$p"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
      > "$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
    pack "$r" "$out"
    rm -rf "$tmp"
    log "wrote $out ($(du -h "$out" | cut -f1))"
  fi
}

apt_mirror() {
  local m=""
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
      | grep -i debian | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | awk '$2 ~ /^http/ {print $2}' | grep -i debian | grep -v security | head -1 || true)
  echo "$m"
}

debian_path() {
  local key
  key=$(printf '%s %s %s' "$SUITE" "$INCLUDE" "$(dpkg --print-architecture)" | sha256sum | cut -c1-12)
  echo "$CACHE/debian-$SUITE-$key-r$RECIPE.tar"
}

debian_make() {  # debian_make OUT.tar
  local mirror out=$1 tmp r
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  mirror=${MIRROR:-$(apt_mirror)}
  [ -n "$mirror" ] || die "no Debian mirror in the apt sources; set MIRROR=URL"
  if [ ! -s "$out" ]; then
    tmp=$(mktemp -d "$CACHE/debian.XXXXXX")
    r=$tmp/rootfs
    log "debootstrap $SUITE from $mirror (about two minutes; cached afterwards)"
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$r" "$mirror" \
        > "$tmp/debootstrap.log" 2>&1; then
      tail -n 20 "$tmp/debootstrap.log" >&2
      rm -rf "$tmp"
      die "debootstrap failed"
    fi
    # Slim: package lists and caches, documentation, logs. Keep dpkg's status so apt works.
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
           "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
           "$r"/usr/share/locale/* "$r"/var/log/*.log "$r"/var/log/apt/* \
           "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/var/cache/ldconfig/*
    # Device nodes, the host's resolver and name belong to the runtime, not to an image layer.
    rm -rf "$r"/dev/* "$r"/proc/* "$r"/sys/* "$r"/run/*
    : > "$r/etc/resolv.conf"
    echo dockyard > "$r/etc/hostname"
    # Point apt at the same mirror the base was made from, so builds here can apt-get update.
    printf 'deb %s %s main\n' "$mirror" "$SUITE" > "$r/etc/apt/sources.list"
    pack "$r" "$out"
    rm -rf "$tmp"
    log "wrote $out ($(du -h "$out" | cut -f1))"
  fi
}

# base NAME ROOTFS.tar MAKE-FUNCTION CMD-JSON
# The first import is saved as an image archive next to the rootfs tarball, and later stores
# load that archive: every store on this machine then has the very same base image (same id),
# so their cache keys and build results agree.
base() {
  local name=$1 rootfs=$2 make=$3 cmd=$4 archive
  archive=${rootfs%.tar}.image.tar
  if has_image "$name"; then
    log "$name is already in $ROOT"
  elif [ -s "$archive" ]; then
    log "loading $name into $ROOT"
    "$DOCKYARD" --root "$ROOT" load -q -i "$archive"
  else
    "$make" "$rootfs"
    log "importing $name into $ROOT"
    SOURCE_DATE_EPOCH=1704067200 "$DOCKYARD" --root "$ROOT" import -c "CMD $cmd" \
      -m "made by scripts/make-bases.sh" "$rootfs" "$name" >/dev/null
    "$DOCKYARD" --root "$ROOT" save -o "$archive.part" "$name"
    mv "$archive.part" "$archive"
  fi
}

# Several builds (or parallel tests) may ask at once: one maker at a time per cache.
exec 9>"$CACHE/.lock"
flock 9

# busybox:latest for this machine's platform and the foreign one: both imported under
# temporary names, then made one multi-platform name (dockyard manifest create).
busybox_both() {  # busybox_both OUT.tar (the host's rootfs tarball; the foreign one is beside)
  local out=$1 foreign_tar plat
  busybox_make "$out"
  foreign_tar=$(busybox_path "$FOREIGN")
  busybox_make "$foreign_tar" "$FOREIGN"
  case $FOREIGN in arm64) plat=linux/arm64 ;; armhf) plat=linux/arm/v7 ;; *) plat=linux/$FOREIGN ;; esac
  SOURCE_DATE_EPOCH=1704067200 "$DOCKYARD" --root "$ROOT" import -c 'CMD ["sh"]' \
    -m "made by scripts/make-bases.sh" "$out" make-bases-tmp:host >/dev/null
  SOURCE_DATE_EPOCH=1704067200 "$DOCKYARD" --root "$ROOT" import --platform "$plat" \
    -c 'CMD ["sh"]' -m "made by scripts/make-bases.sh" "$foreign_tar" \
    make-bases-tmp:foreign >/dev/null
  "$DOCKYARD" --root "$ROOT" manifest create busybox:latest make-bases-tmp:host \
    make-bases-tmp:foreign >/dev/null
  "$DOCKYARD" --root "$ROOT" rmi make-bases-tmp:host make-bases-tmp:foreign >/dev/null
}

# base_multi NAME ROOTFS.tar MAKE-FUNCTION: as base, for a maker that imports and names the
# image itself (a multi-platform one); its archive holds every platform.
base_multi() {
  local name=$1 rootfs=$2 make=$3 archive
  archive=${rootfs%.tar}-$FOREIGN.image.tar
  if has_image "$name"; then
    log "$name is already in $ROOT"
  elif [ -s "$archive" ]; then
    log "loading $name into $ROOT"
    "$DOCKYARD" --root "$ROOT" load -q -i "$archive"
  else
    log "importing $name into $ROOT"
    "$make" "$rootfs"
    "$DOCKYARD" --root "$ROOT" save -o "$archive.part" "$name"
    mv "$archive.part" "$archive"
  fi
}

if [ -z "$ONLY" ] || [ "$ONLY" = busybox ]; then
  p=$(busybox_path)
  if [ "$FOREIGN" = none ]; then
    base busybox:latest "$p" busybox_make '["sh"]'
  else
    base_multi busybox:latest "$p" busybox_both
  fi
fi
if [ -z "$ONLY" ] || [ "$ONLY" = debian ]; then
  p=$(debian_path)
  base "debian:$SUITE" "$p" debian_make '["bash"]'
fi
