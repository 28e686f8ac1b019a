"""Snapshot directories are spread over ext4's block groups (``chattr +T`` on their parent),
so a build right after a prune does not crawl through the inodes the prune just freed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dockyard.snapshot.topdir import spread_subdirs
from dockyard.store.db import Store


def _ext4(path: Path) -> bool:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() in ("ext2/ext3", "ext4")


@pytest.mark.skipif(os.geteuid() != 0, reason="setting inode flags needs root")
def test_store_dirs_get_the_topdir_flag(tmp_path: Path) -> None:
    base = Path("/var/tmp")
    if not _ext4(base):
        pytest.skip("/var/tmp is not ext4: the flag does not exist there")
    root = Path(subprocess.run(["mktemp", "-d", "-p", str(base)], capture_output=True,
                               text=True, check=True).stdout.strip())
    try:
        store = Store.open(root)
        for path in (store.snapshots_dir, store.cache_dir, root / "tmp"):
            attrs = subprocess.run(["lsattr", "-d", str(path)], capture_output=True,
                                   text=True, check=True).stdout.split()[0]
            assert "T" in attrs, (path, attrs)
        assert spread_subdirs(store.snapshots_dir)  # idempotent
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_unsupported_file_systems_are_left_alone(tmp_path: Path) -> None:
    assert spread_subdirs(tmp_path / "missing") is False
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = shm / f"topdir-{os.getpid()}"
        d.mkdir()
        try:
            assert spread_subdirs(d) is False  # tmpfs has no such flag
        finally:
            d.rmdir()
