"""The copy-based snapshotter, for hosts where overlayfs cannot mount.

A committed snapshot is a full root filesystem at ``<root>/snapshots/<id>/fs``. ``prepare``
copies the parent (reflinks where the filesystem has them) and records a stat tree of the
copy; ``diff`` walks the tree again and compares stats, so unchanged files are never read.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from dockyard.errors import StoreError
from dockyard.snapshot._meta import MetaBacked
from dockyard.snapshot.base import Mount, make_root_dir

if TYPE_CHECKING:
    from dockyard.layers.tarwriter import LayerStats

__all__ = ["Change", "NativeSnapshotter", "StatEntry", "compute_changes", "stat_tree"]


@dataclass(frozen=True, slots=True)
class StatEntry:
    """What the differ compares. ``ctime_ns`` catches chmod/chown/xattr and same-size writes
    with a reset mtime; ``ino`` catches a path replaced by another file."""

    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    nlink: int
    link: str | None


StatTree = dict[str, StatEntry]


@dataclass(frozen=True, slots=True)
class Change:
    """One diff entry: ``add`` (new or changed) or ``delete`` (a whiteout)."""

    kind: Literal["add", "delete"]
    path: str


def stat_tree(root: Path) -> StatTree:
    """Relative path -> :class:`StatEntry` for every entry below ``root`` (not root itself)."""
    tree: StatTree = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        base = os.path.join(root, rel) if rel else str(root)
        with os.scandir(base) as it:
            for entry in it:
                p = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                link = os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else None
                tree[p] = StatEntry(
                    st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino, st.st_nlink, link,
                )
                if stat.S_ISDIR(st.st_mode):
                    stack.append(p)
    return tree


def _key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def compute_changes(old: StatTree, new: StatTree) -> list[Change]:
    """The layer entries turning ``old`` into ``new``, parents first, in path order.

    Changed and added entries are ``add``; their parent directories are added too (as
    Docker's layers carry them). A removed path gives one ``delete`` at its topmost removed
    ancestor. A directory replaced by a new one (``rm -rf d && mkdir d``) is compared entry
    by entry like any other: what went from it is deleted, as BuildKit writes it. Whether
    the new directory got the old one's inode number (the file system may reuse it at once)
    changes nothing.
    """
    added: set[str] = set()
    for path in sorted(new, key=_key):
        ne = new[path]
        oe = old.get(path)
        if oe is None:
            added.add(path)
        elif ne != oe:
            if (stat.S_ISDIR(ne.mode) and stat.S_ISDIR(oe.mode) and ne.ino == oe.ino
                    and ne == replace(oe, ctime_ns=ne.ctime_ns)):
                # Only the ctime moved: an entry was added and removed again (a mount
                # point the executor cleaned up, restoring the mtime); nothing to record.
                continue
            added.add(path)

    deleted: set[str] = set()
    for path in old:
        if path in new:
            continue
        parent = _parent(path)
        if parent and (parent not in new or not stat.S_ISDIR(new[parent].mode)):
            continue  # a removed or replaced ancestor covers it
        deleted.add(path)

    with_parents = set(added)
    for path in added | deleted:
        parent = _parent(path)
        while parent and parent not in with_parents:
            with_parents.add(parent)
            parent = _parent(parent)

    # The order of the tar writer's own directory walk (overlay diffs): by path components,
    # a whiteout where its name was.
    entries: list[tuple[tuple[str, ...], Change]] = []
    entries += [(_key(p), Change("add", p)) for p in with_parents]
    entries += [(_key(p), Change("delete", p)) for p in deleted]
    entries.sort(key=lambda e: e[0])
    return [ch for _, ch in entries]


class NativeSnapshotter(MetaBacked):
    """Copy-based snapshots (see the module docstring)."""

    name = "native"

    def __init__(self, root: Path) -> None:
        super().__init__(root, "native")

    def prepare(self, key: str, parent: str | None) -> list[Mount]:
        """Copy committed ``parent`` (or start empty) and remember its stat tree."""
        rec = self._meta.create(key, "active", parent)
        d = self._dir(rec)
        fs = d / "fs"
        try:
            if parent is None:
                make_root_dir(fs)
            else:
                src = self._dir(self._meta.get(parent)) / "fs"
                proc = subprocess.run(
                    ["cp", "-a", "--reflink=auto", "--", str(src), str(fs)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    raise StoreError(f"copying snapshot {parent}: {proc.stderr.strip()}")
            with open(d / "stat-tree.pickle", "wb") as f:
                pickle.dump(stat_tree(fs), f, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            self._meta.remove(key)
            raise
        return self.mounts(key)

    def view(self, key: str, parent: str | None) -> list[Mount]:
        """A read-only bind of committed ``parent`` (no copy)."""
        rec = self._meta.create(key, "view", parent)
        make_root_dir(self._dir(rec) / "fs")
        return self.mounts(key)

    def mounts(self, key: str) -> list[Mount]:
        """A bind mount of the snapshot's directory."""
        rec = self._meta.get(key)
        if rec.kind == "view":
            src = self._dir(self._meta.get(rec.parent)) if rec.parent else self._dir(rec)
            return [Mount("bind", str(src / "fs"), ("rbind", "ro"))]
        if rec.kind != "active":
            raise StoreError(f"snapshot {key} is committed; prepare or view it to mount")
        return [Mount("bind", str(self._dir(rec) / "fs"), ("rbind", "rw"))]

    def commit(self, name: str, key: str) -> None:
        """Make active ``key`` the committed snapshot ``name``."""
        rec = self._meta.commit(name, key)
        (self._dir(rec) / "stat-tree.pickle").unlink(missing_ok=True)

    def remove(self, key: str) -> None:
        """Delete a snapshot (refused while others are built on it)."""
        self._meta.remove(key)

    def changes(self, key: str) -> list[Change]:
        """What active ``key`` changed since it was prepared."""
        rec = self._meta.get(key)
        d = self._dir(rec)
        try:
            with open(d / "stat-tree.pickle", "rb") as f:
                old: StatTree = pickle.load(f)
        except FileNotFoundError as err:
            raise StoreError(f"snapshot {key} is not active") from err
        return compute_changes(old, stat_tree(d / "fs"))

    def diff(self, key: str, out: BinaryIO, *, source_date_epoch: int | None,
             opaque_markers: bool = False) -> LayerStats:
        """Write the changes of ``key`` as a layer tar. ``opaque_markers`` changes nothing:
        this snapshotter stores each layer's tar when it is made and never writes it again,
        so it has no layer of an older form to match."""
        from dockyard.layers.tarwriter import TarWriter

        fs = self.fs_dir(key)
        writer = TarWriter(out, source_date_epoch=source_date_epoch)
        for ch in self.changes(key):
            if ch.kind == "add":
                writer.add_path(fs / ch.path, ch.path)
            else:
                writer.add_whiteout(ch.path)
        return writer.close()

    def apply(self, key: str, stream: BinaryIO) -> None:
        """Unpack a layer into active ``key`` (whiteouts delete, as in a flat rootfs)."""
        from dockyard.layers.apply import apply_layer

        rec = self._meta.get(key)
        if rec.kind != "active":
            raise StoreError(f"snapshot {key} is not active")
        fs = self._dir(rec) / "fs"
        apply_layer(stream, fs, overlay_whiteouts=False)
        with open(self._dir(rec) / "stat-tree.pickle", "wb") as f:
            pickle.dump(stat_tree(fs), f, protocol=pickle.HIGHEST_PROTOCOL)
