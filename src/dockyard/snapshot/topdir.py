"""Spread new directories over the file system's block groups (ext4's ``chattr +T``).

Measured on this project's CI machine (ext4): creating a snapshot's 5,000 files took
1.3-3.3 s right after a prune had deleted the previous build's 5,000 files, and 0.2 s with
this flag on the parent. ext4 puts a new directory's inodes in its parent's block group, and
its inode allocator skips every inode deleted in the last ~30 s one by one (to keep them
for a journal replay), rescanning them for each new file: quadratic in the files a prune just
removed. With ``FS_TOPDIR_FL`` on ``snapshots/``, each snapshot directory is placed by the
Orlov allocator in a group of its own, away from the freshly freed inodes.
"""

from __future__ import annotations

import array
import fcntl
import os
from pathlib import Path

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_subdirs(path: Path | str) -> bool:
    """Set ``FS_TOPDIR_FL`` on directory ``path``; True if it is set. File systems without
    the flag (tmpfs, overlay, xfs ...) and unprivileged callers are left as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if flags[0] & FS_TOPDIR_FL:
            return True
        flags[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
