"""Base images for tests: a busybox root filesystem tarball built from Debian's busybox-static,
as /work/shared/peers/bases/mk-busybox.sh builds it, plus a user ``app`` (1000:1000).

For another architecture (``arch="arm64"``) the busybox binary comes from Debian's
``busybox-static:<arch>`` package, fetched with ``apt-get download`` (scripts/setup.sh adds
the architecture to dpkg), and its applet list is read by running it under QEMU.

The tarball is cached (keyed by the busybox binary's digest and this recipe's version) under
``$DOCKYARD_TEST_BASES`` or /var/tmp/dockyard-test-bases, so building it is paid once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "busybox_rootfs_tar",
    "default_cache_dir",
    "emulator",
    "extract_rootfs",
    "foreign_busybox",
    "need_emulation",
    "need_root",
    "need_runtime",
    "static_busybox",
]

# dpkg architecture -> the QEMU user-mode emulator and binfmt_misc entry Debian names
_QEMU = {"arm64": "aarch64", "armhf": "arm", "ppc64el": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}

_RECIPE = 2
_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
_GROUP = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n"


def default_cache_dir() -> Path:
    """Where built base tarballs are kept between test runs."""
    return Path(os.environ.get("DOCKYARD_TEST_BASES", "/var/tmp/dockyard-test-bases"))


def static_busybox() -> str | None:
    """Path of a statically linked busybox, or None."""
    bb = shutil.which("busybox")
    if bb is None:
        return None
    proc = subprocess.run(["ldd", bb], capture_output=True, text=True, check=False)
    # ldd exits non-zero ("not a dynamic executable") for static binaries.
    if proc.returncode == 0 and "statically linked" not in proc.stdout:
        return None
    return bb


def emulator(arch: str) -> str | None:
    """The qemu-user-static binary for a dpkg architecture, or None."""
    name = _QEMU.get(arch)
    return shutil.which(f"qemu-{name}-static") if name else None


def need_emulation(arch: str = "arm64") -> str | None:
    """A pytest skip reason when binaries of ``arch`` cannot run here (QEMU user-mode
    emulation registered in binfmt_misc), else None."""
    name = _QEMU.get(arch, arch)
    if os.uname().machine in (name, arch):
        return None
    if emulator(arch) is None:
        return f"no QEMU emulator for {arch} (apt-get install qemu-user-static)"
    if not os.path.exists(f"/proc/sys/fs/binfmt_misc/qemu-{name}"):
        return (f"qemu-{name} is not registered in binfmt_misc (apt-get install "
                "binfmt-support; scripts/setup.sh registers it)")
    return None


def foreign_busybox(arch: str, cache_dir: Path | None = None) -> Path:
    """Debian's static busybox binary for ``arch`` (from ``busybox-static:<arch>``, cached);
    raises RuntimeError naming what is missing."""
    cache_dir = cache_dir or default_cache_dir()
    out = cache_dir / f"busybox-static-{arch}"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user writes the download here
        proc = subprocess.run(
            ["apt-get", "download", f"busybox-static:{arch}"], cwd=tmp,
            capture_output=True, text=True, check=False,
        )
        debs = list(Path(tmp).glob("busybox-static_*.deb"))
        if proc.returncode != 0 or not debs:
            raise RuntimeError(
                f"apt-get download busybox-static:{arch} failed ({proc.stderr.strip()[-300:]});"
                f" run scripts/setup.sh (dpkg --add-architecture {arch}; apt-get update)")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True)
        bb = Path(tmp) / "x" / "bin" / "busybox"
        os.chmod(bb, 0o755)
        os.replace(bb, out)
    return out


def busybox_rootfs_tar(cache_dir: Path | None = None, arch: str | None = None) -> Path:
    """A deterministic busybox rootfs tarball (built once, then cached); raises RuntimeError
    when no static busybox is installed (Debian: ``apt-get install busybox-static``).

    ``arch`` (a dpkg architecture, e.g. ``arm64``) makes one for that architecture from
    Debian's ``busybox-static:<arch>`` (needs QEMU to list its applets)."""
    cache_dir = cache_dir or default_cache_dir()
    runner: list[str] = []
    if arch is None:
        bb = static_busybox()
        if bb is None:
            raise RuntimeError("no static busybox; apt-get install busybox-static")
    else:
        bb = str(foreign_busybox(arch, cache_dir))
        qemu = emulator(arch)
        if qemu is None:
            raise RuntimeError(f"no QEMU emulator for {arch}; apt-get install qemu-user-static")
        runner = [qemu]
    digest = hashlib.sha256(Path(bb).read_bytes()).hexdigest()[:16]
    out = cache_dir / f"busybox-{digest}-r{_RECIPE}.tar"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        r = Path(tmp) / "rootfs"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev",
                  "var/tmp", "home/app"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "tmp").mkdir()
        os.chmod(r / "tmp", 0o1777)
        shutil.copy2(bb, r / "bin" / "busybox")
        os.chmod(r / "bin" / "busybox", 0o755)
        applets = subprocess.run(
            [*runner, str(r / "bin" / "busybox"), "--list-full"], capture_output=True, text=True,
            check=True,
        ).stdout.split()
        for p in applets:
            if p == "bin/busybox":
                continue
            (r / p).parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(r / p):
                os.unlink(r / p)
            os.symlink("/bin/busybox", r / p)
        (r / "etc" / "passwd").write_text(_PASSWD)
        (r / "etc" / "group").write_text(_GROUP)
        tmp_out = Path(tmp) / "out.tar"
        common = ["tar", "--mtime=2024-01-01 00:00:00Z", "--numeric-owner", "-C", str(r)]
        subprocess.run(
            [*common, "--sort=name", "--owner=0", "--group=0", "--exclude=./home/app",
             "-cf", str(tmp_out), "."],
            check=True,
        )
        subprocess.run(
            [*common, "--owner=1000", "--group=1000", "-rf", str(tmp_out), "./home/app"],
            check=True,
        )
        os.replace(tmp_out, out)
    return out


def extract_rootfs(tar: Path, dest: Path) -> Path:
    """Unpack ``tar`` into ``dest`` keeping owners, modes and times (as root)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--numeric-owner", "--same-permissions", "-xf", str(tar), "-C", str(dest)],
        check=True,
    )
    return dest


def need_root() -> str | None:
    """A pytest skip reason when not running as root, else None."""
    return None if os.geteuid() == 0 else "needs root"


def need_runtime() -> str | None:
    """A pytest skip reason when no OCI runtime (crun/runc) is installed or root is missing."""
    if os.geteuid() != 0:
        return "needs root"
    if not (shutil.which("crun") or shutil.which("runc")):
        return "no OCI runtime (apt-get install crun runc)"
    if static_busybox() is None:
        return "no static busybox (apt-get install busybox-static)"
    return None
