"""Incremental COPY: a file that did not change since the last build is linked, not copied.

When a COPY from the context misses because some of its files changed, the previous build's
result of the same step usually still holds most of the new layer's files, byte for byte and
with the same metadata, in its committed overlay snapshot. Instead of creating each of them
again (for 5,000 small files, most of the step's time), the copy skips them and, once the
step's overlay is unmounted, hard-links them from that snapshot's upper dir into the new one.
Snapshots are never written to once committed (overlayfs copies a lower file up before
changing it), so sharing inodes between them is safe.

A file is linked only when everything the layer records of it is known to be equal:

* its source entry in this build's selection manifest equals the one in the previous build's
  (type, mode, owner, size, sha256, link target, xattrs: the same rule as the cache key);
* the previous snapshot's copy is a regular file with the size, mode, owner and mtime this
  copy would give it, and no xattrs;
* its parent directory already exists in the new upper dir and the target does not.

Otherwise the file is copied as usual. The result is the same layer a full copy makes (a test
compares the diff ids with a build in a fresh store). Only plain cases take this path: one
source without wildcards from the build context, no ``--parents``, no ``ADD``, no
``--link``, not under ``--no-cache``, on the overlay snapshotter.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockyard.context.hashing import FileMeta


class FileReuse:
    """The copy hook (see :func:`dockyard.context.copy.copy_into`'s ``reuse``) and the links
    it defers."""

    def __init__(
        self,
        ctx_root: Path,
        rootfs: Path,
        upper: Path,
        donor_upper: Path,
        current: Mapping[str, FileMeta],
        previous: Mapping[str, Any],
    ) -> None:
        self.ctx_root = os.path.abspath(ctx_root)
        self.rootfs = os.path.abspath(rootfs)
        self.upper = os.fspath(upper)
        self.donor_upper = os.fspath(donor_upper)
        self.current = current
        self.previous = previous
        self.links: list[tuple[str, str]] = []  # (file in the donor, path below the upper)
        self._lock = threading.Lock()

    def __call__(
        self, src: str | os.PathLike[str], st: os.stat_result, target: str | os.PathLike[str],
        mode: int, owner: tuple[int, int], mtime_ns: int,
    ) -> bool:
        """True if ``target`` (a copy of regular file ``src``) will be linked instead."""
        rel_src = _below(os.fspath(src), self.ctx_root)
        rel = _below(os.fspath(target), self.rootfs)
        if rel_src is None or rel is None:
            return False
        meta = self.current.get(rel_src)
        old = self.previous.get(rel_src)
        if meta is None or old is None or meta.xattrs or meta.to_json() != old:
            return False
        donor = os.path.join(self.donor_upper, rel)
        try:
            d = os.lstat(donor)
            if os.listxattr(donor, follow_symlinks=False):
                return False
        except OSError:
            return False
        if (
            not stat.S_ISREG(d.st_mode)
            or d.st_size != st.st_size
            or stat.S_IMODE(d.st_mode) != mode
            or (d.st_uid, d.st_gid) != owner
            or d.st_mtime_ns != mtime_ns
        ):
            return False
        dest = os.path.join(self.upper, rel)
        # Reading the upper dir of a mounted overlay is fine; it is only written to after
        # the unmount (link_all).
        if not os.path.isdir(os.path.dirname(dest)) or os.path.lexists(dest):
            return False
        with self._lock:
            self.links.append((donor, rel))
        return True

    def link_all(self) -> int:
        """Make the deferred links (the overlay must be unmounted); returns how many. The
        parent directories keep the times the copy gave them."""
        times: dict[str, tuple[int, int]] = {}
        for donor, rel in self.links:
            dest = os.path.join(self.upper, rel)
            parent = os.path.dirname(dest)
            if parent not in times:
                pst = os.lstat(parent)
                times[parent] = (pst.st_atime_ns, pst.st_mtime_ns)
            os.link(donor, dest)
        for parent, ns in times.items():
            os.utime(parent, ns=ns, follow_symlinks=False)
        return len(self.links)


def _below(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` if it is below it (the copy passes absolute, clean
    paths; anything else is simply not reused)."""
    if path.startswith(root) and path[len(root):len(root) + 1] == "/":
        return path[len(root) + 1:]
    return None
