"""The full-disk suite: a store on a small tmpfs, filled through RUN, COPY, an export and a
load. Each gives a clear one-line error (no traceback); then, with the disk full to the last
byte, ``rmi``, ``cache prune`` and ``prune`` still work and free the space, ``store check``
is clean, and the next build works."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, write_tree

from bases import busybox_rootfs_tar, need_runtime
from dockyard.snapshot.base import unmount

SIZE_MIB = 128
GARBAGE_MB = 48


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(disk)],
                   check=True)
    try:
        root = disk / "store"
        _ok(root, "import", str(busybox_rootfs_tar()), "busybox:latest")
        yield root
    finally:
        subprocess.run(["umount", "-R", str(disk)], check=False)
        with contextlib.suppress(Exception):
            unmount(disk)


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=600, check=False)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def _ok(root: Path, *args: str) -> str:
    proc = _run(root, *args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _one_error(proc: subprocess.CompletedProcess[str], pattern: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def _garbage(root: Path, tmp_path: Path) -> None:
    """A tagged image with a big layer: freed by rmi + prune later."""
    ctx = write_tree(tmp_path / "garbage", {
        "Dockerfile": f"FROM busybox\nRUN head -c {GARBAGE_MB}000000 /dev/urandom > /g\n"})
    _ok(root, "build", "-q", "-t", "garbage:1", str(ctx))


def _fill(disk: Path) -> Path:
    """Fill the file system to the last byte (outside the store)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert _free(disk) < 64 << 10
    return filler


def _recover(root: Path, tmp_path: Path, *, cache_prune: bool = False) -> None:
    """On a full disk: rmi, (cache prune), prune free the space; the store checks clean;
    a build works."""
    disk = root.parent
    filler = _fill(disk)
    before = _free(disk)
    _ok(root, "rmi", "garbage:1")
    # the command that frees the space says how much it freed (not "0B")
    out = _ok(root, "cache", "prune", "--all") if cache_prune else _ok(root, "prune", "--all")
    freed = _free(disk) - before
    assert freed > (GARBAGE_MB - 8) * 1_000_000, (freed, out)
    assert not out.strip().endswith(" 0B"), out
    _ok(root, "prune", "--all")
    _ok(root, "store", "check")
    ctx = write_tree(tmp_path / "next", {"Dockerfile": "FROM busybox\nRUN echo ok > /ok\n"})
    _ok(root, "build", "-q", "-t", "next:1", str(ctx))
    filler.unlink()
    _ok(root, "store", "check")


def test_full_through_run(store: Path, tmp_path: Path) -> None:
    _garbage(store, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN dd if=/dev/urandom of=/big bs=1M count=400\n"})
    proc = _run(store, "build", "--progress", "plain", str(ctx))
    _one_error(proc, r"Dockerfile:2: process .* did not complete successfully")
    assert "No space left on device" in proc.stderr
    _recover(store, tmp_path)


def test_full_through_copy(store: Path, tmp_path: Path) -> None:
    _garbage(store, tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY big /big\n")
    with open(ctx / "big", "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    proc = _run(store, "build", "--progress", "plain", str(ctx))
    _one_error(proc, r"Dockerfile:2: no space left on device while writing a file of the COPY "
                     r"\(.*/big\)")
    _recover(store, tmp_path)


def test_full_through_export(store: Path, tmp_path: Path) -> None:
    _garbage(store, tmp_path)
    dest = store.parent / "out.tar"
    proc = _run(store, "save", "-o", str(dest), "garbage:1")
    _one_error(proc, r"no space left on device while writing")
    assert not dest.exists()
    assert [p.name for p in store.parent.iterdir()] == ["store"]  # no hidden temp file left
    proc = _run(store, "build", "-o", f"type=oci,dest={dest}", str(tmp_path / "garbage"))
    _one_error(proc, r"no space left on device while writing")
    assert [p.name for p in store.parent.iterdir()] == ["store"]
    _recover(store, tmp_path)


def _docker_archive(path: Path, layer_mb: int) -> None:
    layer_path = path.with_suffix(".layer")
    with tarfile.open(layer_path, "w") as tf:
        info = tarfile.TarInfo("big")
        info.size = layer_mb << 20
        with open("/dev/urandom", "rb") as rnd:
            tf.addfile(info, io.BufferedReader(rnd, buffer_size=1 << 20))  # type: ignore[arg-type]
    digest = hashlib.sha256()
    with open(layer_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    diff_id = "sha256:" + digest.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["big:1"],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in (("manifest.json", manifest), (config_name, config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.add(layer_path, "layer.tar")
    layer_path.unlink()


def test_full_through_load(store: Path, tmp_path: Path) -> None:
    _garbage(store, tmp_path)
    archive = tmp_path / "big.tar"
    _docker_archive(archive, 100)
    proc = _run(store, "load", "-i", str(archive))
    _one_error(proc, r"no space left on device while writing .*big\.tar")
    assert list((store / "tmp").iterdir()) == []
    _recover(store, tmp_path, cache_prune=True)
