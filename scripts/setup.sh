#!/usr/bin/env bash
# Set up everything dockyard and its tests need on a fresh Debian machine (idempotent):
# system packages (as root, through apt-get) and a virtualenv in .venv with dockyard installed.
#   NO_APT=1   never call apt-get (report what is missing instead)
#   WITH_BENCH=1  also the bench extra (matplotlib, py-spy: bench/plot_growth.py, bench/profile.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKGS=(crun runc skopeo umoci docker-registry busybox-static debootstrap e2fsprogs
      git tar xz-utils bzip2 curl time iproute2 openssl apache2-utils
      qemu-user-static binfmt-support
      uidmap slirp4netns passt
      zsh fish)  # zsh, fish: the generated completion scripts are tested in them
# Foreign architectures whose packages the test bases are made from (busybox-static:arm64,
# fetched with apt-get download), and whose binaries RUN steps emulate through QEMU.
FOREIGN_ARCHS=(arm64)
# The differential (conformance) suite also needs the reference builders.
if [ -n "${WITH_PEERS:-}" ]; then PKGS+=(docker.io containerd buildah podman); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${NO_APT:-}" ] || [ "$(id -u)" != 0 ]; then
    echo "setup: missing system packages (install as root): ${missing[*]}" >&2
  else
    echo "setup: apt-get install ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Package lists for the foreign architectures (apt-get download busybox-static:arm64).
if [ -z "${NO_APT:-}" ] && [ "$(id -u)" = 0 ]; then
  added=""
  for a in "${FOREIGN_ARCHS[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
      dpkg --add-architecture "$a"
      added=1
    fi
  done
  if [ -n "$added" ]; then
    echo "setup: dpkg --add-architecture ${FOREIGN_ARCHS[*]}; apt-get update" >&2
    apt-get update -qq
  fi
fi

# QEMU user-mode emulation in binfmt_misc, for RUN steps of foreign platforms. Without a
# service manager (containers, CI) nothing mounts binfmt_misc or registers the handlers:
# do both. Debian's qemu-user-static registers with the F flag (fix binary), so the
# interpreter is opened now and works inside the build containers.
if [ "$(id -u)" = 0 ] && command -v update-binfmts >/dev/null 2>&1; then
  bfm=/proc/sys/fs/binfmt_misc
  if [ ! -e "$bfm/register" ] && grep -qw binfmt_misc /proc/filesystems; then
    mount -t binfmt_misc binfmt_misc "$bfm" 2>/dev/null \
      || echo "setup: cannot mount binfmt_misc (foreign-platform RUN steps will fail)" >&2
  fi
  if [ -e "$bfm/register" ]; then
    for f in /usr/share/binfmts/qemu-*; do
      [ -e "$f" ] || continue
      name=$(basename "$f")
      [ -e "$bfm/$name" ] || update-binfmts --enable "$name" >/dev/null 2>&1 \
        || echo "setup: update-binfmts --enable $name failed" >&2
    done
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.dockyard-installed
if [ -n "${WITH_BENCH:-}" ] && ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
  rm -f "$stamp"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[test${WITH_BENCH:+,bench}]"
  touch "$stamp"
fi
