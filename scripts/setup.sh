#!/usr/bin/env bash
# Set up everything dockyard and its tests need on a fresh Debian machine (idempotent):
# system packages (as root, through apt-get) and a virtualenv in .venv with dockyard installed.
#   NO_APT=1   never call apt-get (report what is missing instead)
#   WITH_BENCH=1  also the bench extra (matplotlib, py-spy: bench/plot_growth.py, bench/profile.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKGS=(crun runc skopeo umoci docker-registry busybox-static debootstrap e2fsprogs
      git tar xz-utils bzip2 curl time iproute2 openssl apache2-utils)
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
