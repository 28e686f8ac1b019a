"""A little space kept back, so dockyard can free space on a full disk.

Deleting takes writing: SQLite appends the deleted rows' pages to its write-ahead log, and
the store generation is rewritten. On a disk filled to the last byte (a build that ran it
out), ``prune``, ``rmi`` and ``cache prune`` would fail with "database or disk is full" and
dockyard could not free its own space. So the store keeps ``<root>/reserve``, a file of
:data:`RESERVE_BYTES` allocated blocks: the commands that free space delete it first when the
disk is (nearly) full, and it is made again once there is room.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RESERVE_BYTES", "ensure_reserve", "making_room", "release_reserve"]

RESERVE_BYTES = 8 << 20
_LOW = 2 * RESERVE_BYTES  # free space below which the reserve is given up before deleting


def _free(root: Path) -> int:
    try:
        st = os.statvfs(root)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def ensure_reserve(root: Path) -> None:
    """Make ``<root>/reserve`` if it is missing and the disk has room for it to spare."""
    path = root / "reserve"
    if path.exists() or _free(root) < 8 * RESERVE_BYTES:
        return
    tmp = root / f".reserve.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def release_reserve(root: Path) -> bool:
    """Give the reserve's space back; True if there was one."""
    try:
        (root / "reserve").unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def making_room(root: Path) -> Iterator[None]:
    """Around a command that frees space: the reserve goes first when the disk is nearly
    full, and comes back afterwards when there is room again."""
    if _free(root) < _LOW:
        release_reserve(root)
    try:
        yield
    finally:
        ensure_reserve(root)
