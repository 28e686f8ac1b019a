"""The overlayfs snapshotter: committed snapshots are layer diffs used as lower dirs.

Layout under ``<root>/snapshots``: ``meta.db`` (see :mod:`._meta`) and ``<id>/fs`` (the
snapshot's own diff: an overlay upper dir while active, a lower dir once committed) plus
``<id>/work`` (overlay's work dir). Committing moves nothing: the upper dir *is* the diff.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dockyard._fs import walk
from dockyard.errors import StoreError
from dockyard.layers.tarwriter import is_overlay_opaque
from dockyard.limits import current as current_limits
from dockyard.snapshot._meta import MetaBacked
from dockyard.snapshot.base import Mount, make_root_dir

if TYPE_CHECKING:
    from dockyard.layers.tarwriter import LayerStats

__all__ = ["OverlaySnapshotter", "merged_names", "redundant_dirs"]

def _feature_options(userns: bool | None = None) -> tuple[str, ...]:
    """Turn off overlay features that write metadata our differ cannot read as a layer.

    In a user namespace (rootless) overlay cannot use ``trusted.`` xattrs: ``userxattr``
    makes it keep its opaque markers in ``user.overlay.opaque`` (whiteouts stay 0:0
    character devices, which a user namespace may create), and redirects may then not even
    be followed (``redirect_dir=nofollow``)."""
    if userns is None:
        from dockyard.rootless.idmap import in_user_namespace

        userns = in_user_namespace()
    opts = ["userxattr"] if userns else []
    for name in ("index", "redirect_dir", "metacopy"):
        try:
            value = Path(f"/sys/module/overlay/parameters/{name}").read_text().strip()
        except OSError:
            continue
        if value not in ("N", "off"):
            opts.append("redirect_dir=nofollow" if userns and name == "redirect_dir"
                        else f"{name}=off")
    return tuple(opts)


def _volatile_option() -> tuple[str, ...]:
    """``("volatile",)`` where overlay takes it (Linux 5.10+), else nothing.

    A step's writable overlay is mounted ``volatile``: its unmount, and every ``fsync`` and
    ``syncfs`` a RUN's processes make through it (dpkg syncs each file it unpacks), write
    nothing back. What the step wrote still reaches the disk before its snapshot counts:
    the commit ``syncfs``es the store's file system first (``snapshot/_meta.py``), and a
    step that never commits is thrown away. A crash while it is mounted leaves overlay's
    ``work/incompat/volatile`` mark, so that upper dir can never be mounted again; it is not
    (an active snapshot is never reused after a crash; the sweep removes it)."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return ()
    return ("volatile",) if (major, minor) >= (5, 10) else ()


def redundant_dirs(upper: Path,
                   lowers: Sequence[str | Path] | Callable[[], Sequence[str | Path]],
                   ) -> set[str]:
    """Upper directories that only exist because overlay copied them up, and add nothing.

    A directory is redundant when it is empty in the upper dir (after its redundant
    children are discounted), is not opaque, and the topmost lower that has the path has a
    directory there with the same mode, owner and mtime. Running a step copies up e.g. /etc
    to create a mount point that is removed afterwards; such directories stay out of the diff.
    Paths are relative to ``upper`` (``"etc"``, ``"usr/lib"``). ``lowers`` may be a function
    that gives them: called only if the upper dir has an empty directory to check (most
    layers have none, and the lowers of a deep stack cost a query of its whole chain).
    """
    redundant: set[str] = set()
    found: Sequence[str | Path] | None = None if callable(lowers) else lowers
    for dirpath, dirnames, filenames in walk(upper, topdown=False,
                                             max_depth=current_limits().max_path_depth):
        rel = os.path.relpath(dirpath, upper)
        if rel == ".":
            continue
        if filenames or any(os.path.join(rel, d) not in redundant for d in dirnames):
            continue
        # os.walk lists symlinks to dirs in dirnames; those are content, not redundant dirs.
        if any(os.path.islink(os.path.join(dirpath, d)) for d in dirnames):
            continue
        if is_overlay_opaque(dirpath):
            continue
        st = os.lstat(dirpath)
        if found is None:
            assert callable(lowers)
            found = lowers()
        for lower in found:
            try:
                lst = os.lstat(os.path.join(lower, rel))
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                break
            if (
                stat.S_ISDIR(lst.st_mode)
                and lst.st_mode == st.st_mode
                and lst.st_uid == st.st_uid
                and lst.st_gid == st.st_gid
                and lst.st_mtime_ns == st.st_mtime_ns
            ):
                redundant.add(rel)
            break
    return redundant


def merged_names(lowers: Sequence[str | Path], rel: str) -> set[str] | None:
    """The names in directory ``rel`` of the merged view of overlay lower dirs ``lowers``
    (top first), as a mount of them would list it, or None where that view has no
    directory: a lower's whiteout hides the name below it, a non-directory or whiteout on
    the way hides the path, and an opaque directory (on the way or at ``rel``) hides what
    the lowers below it have there."""
    parts = rel.split("/")
    names: set[str] = set()
    hidden: set[str] = set()
    found = False
    for lower in lowers:
        opaque = False
        path = os.fspath(lower)
        missing = False
        for part in parts:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                missing = True
                break
            if not stat.S_ISDIR(st.st_mode):
                return names if found else None  # a whiteout, file or symlink hides it
            if is_overlay_opaque(path):
                opaque = True
        if not missing:
            found = True
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        if entry.name in names or entry.name in hidden:
                            continue
                        est = entry.stat(follow_symlinks=False)
                        if stat.S_ISCHR(est.st_mode) and est.st_rdev == 0:
                            hidden.add(entry.name)
                        else:
                            names.add(entry.name)
            except OSError as err:
                raise StoreError(f"cannot list {path}: {err.strerror}") from err
        if opaque:
            break
    return names if found else None


class OverlaySnapshotter(MetaBacked):
    """Kernel overlayfs snapshots (see the module docstring)."""

    name = "overlay"

    def __init__(self, root: Path) -> None:
        super().__init__(root, "overlay")
        self._features = _feature_options()
        self._volatile = _volatile_option()

    def _lowers(self, parent: str | None) -> list[Path]:
        return [self._dir(r) / "fs" for r in self._meta.chain(parent)]

    def prepare(self, key: str, parent: str | None) -> list[Mount]:
        """A writable snapshot over committed ``parent`` (or an empty one)."""
        rec = self._meta.create(key, "active", parent)
        d = self._dir(rec)
        make_root_dir(d / "fs")
        (d / "work").mkdir(mode=0o700)
        return self.mounts(key)

    def view(self, key: str, parent: str | None) -> list[Mount]:
        """A read-only view of committed ``parent``."""
        rec = self._meta.create(key, "view", parent)
        make_root_dir(self._dir(rec) / "fs")
        return self.mounts(key)

    def mounts(self, key: str) -> list[Mount]:
        """Overlay mount data for ``key`` (bind mounts where no overlay is needed)."""
        rec = self._meta.get(key)
        d = self._dir(rec)
        lowers = self._lowers(rec.parent)
        if rec.kind == "view":
            if not lowers:
                return [Mount("bind", str(d / "fs"), ("rbind", "ro"))]
            if len(lowers) == 1:
                return [Mount("bind", str(lowers[0]), ("rbind", "ro"))]
            return [
                Mount(
                    "overlay",
                    "overlay",
                    ("ro", "lowerdir=" + ":".join(map(str, lowers)), *self._features),
                )
            ]
        if rec.kind != "active":
            raise StoreError(f"snapshot {key} is committed; prepare or view it to mount")
        if not lowers:
            return [Mount("bind", str(d / "fs"), ("rbind", "rw"))]
        return [
            Mount(
                "overlay",
                "overlay",
                (
                    "lowerdir=" + ":".join(map(str, lowers)),
                    f"upperdir={d / 'fs'}",
                    f"workdir={d / 'work'}",
                    *self._features,
                    *self._volatile,
                ),
            )
        ]

    def upper_dir(self, key: str) -> Path:
        """The upper dir of active ``key``; write to it only while ``key`` is not mounted."""
        rec = self._meta.get(key)
        if rec.kind != "active":
            raise StoreError(f"snapshot {key} is not active")
        return self._dir(rec) / "fs"

    def commit(self, name: str, key: str) -> None:
        """Make active ``key`` the committed snapshot ``name``; its upper dir is the diff."""
        rec = self._meta.commit(name, key)
        _remove_work_dir(self._dir(rec) / "work")

    def remove(self, key: str) -> None:
        """Delete a snapshot (refused while others are built on it)."""
        self._meta.remove(key)

    def diff(self, key: str, out: BinaryIO, *, source_date_epoch: int | None,
             opaque_markers: bool = False) -> LayerStats:
        """Write the upper dir of ``key`` as a layer (overlay whiteouts -> OCI whiteouts).

        An opaque directory becomes a whiteout for each name it hides, as BuildKit writes
        it; ``opaque_markers`` writes a ``.wh..wh..opq`` marker instead (layers recorded
        before 2026-12, :data:`dockyard.store.layers.TAR_FORMAT`)."""
        from dockyard.layers.tarwriter import write_layer_from_dir

        rec = self._meta.get(key)
        base = os.fspath(self._meta.dir)
        upper = Path(f"{base}/{rec.id}/fs")
        chain: list[str] | None = None

        def lowers() -> list[str]:
            # strings: 100 layers make 4,950; the chain's query only when needed (an export
            # of 100 stacked layers made 100 such queries, 5,050 rows, for no empty dir)
            nonlocal chain
            if chain is None:
                chain = [f"{base}/{i}/fs" for i in self._meta.chain_ids(key)[1:]]
            return chain

        skip = redundant_dirs(upper, lowers) if rec.parent is not None else set()
        paths: list[str] | None = None
        if skip:
            paths = []
            for dirpath, dirnames, filenames in walk(upper):
                rel = os.path.relpath(dirpath, upper)
                dirnames[:] = [d for d in dirnames if _join(rel, d) not in skip]
                paths.extend(_join(rel, n) for n in dirnames + filenames)
            paths.sort()
        return write_layer_from_dir(
            upper, out, source_date_epoch=source_date_epoch, overlay_whiteouts=True,
            paths=paths, lower_names=None if opaque_markers or rec.parent is None
            else lambda rel: merged_names(lowers(), rel))

    def apply(self, key: str, stream: BinaryIO) -> None:
        """Unpack a layer into the upper dir of active ``key``, whiteouts in overlay form."""
        from dockyard.layers.apply import apply_layer

        rec = self._meta.get(key)
        if rec.kind != "active":
            raise StoreError(f"snapshot {key} is not active")
        apply_layer(stream, self._dir(rec) / "fs", overlay_whiteouts=True,
                    lowers=self._lowers(rec.parent))


def _remove_work_dir(work: Path) -> None:
    """Remove an unmounted overlay's work dir. After a clean unmount it holds only overlay's
    empty ``work/`` (and, after a ``volatile`` mount, ``work/incompat/volatile``): a few
    ``rmdir``s. Anything else (a crash's leftovers, ``index/``) goes through ``rmtree``,
    which costs a walk: 9.6% of layers100's busy samples when every commit used it (issue
    18)."""
    try:
        for leftover in ("work/incompat/volatile", "work/incompat", "work"):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(work / leftover)
        os.rmdir(work)
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _join(rel: str, name: str) -> str:
    return name if rel == "." else f"{rel}/{name}"
