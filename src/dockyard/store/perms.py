"""The store is root-only: its root directory is 0700, whatever the umask.

Everything dockyard keeps (layers, snapshots with their setuid files and device nodes,
bundles, cache mounts, the database) lives below the root, so one mode bit is the barrier
for every other user. A store made by an older dockyard (0755) is fixed when opened; then
its top-level entries lose their group and other bits too, so a later ``chmod 755`` of the
root alone does not open them again.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["ROOT_MODE", "secure_root"]

ROOT_MODE = 0o700


def secure_root(root: Path) -> bool:
    """Make ``root`` 0700 (and, if it was not, its top-level entries owner-only). Returns
    whether anything changed. A root owned by another user is left alone (not ours)."""
    st = os.lstat(root)
    if stat.S_IMODE(st.st_mode) == ROOT_MODE or st.st_uid != os.geteuid():
        return False
    os.chmod(root, ROOT_MODE)
    with os.scandir(root) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                if mode & 0o077 and not entry.is_symlink():
                    os.chmod(entry.path, mode & 0o700)
    return True
