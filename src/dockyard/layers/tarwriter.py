"""The reproducible layer tar writer.

Every layer dockyard produces goes through :class:`TarWriter`. The output matches what
BuildKit/containerd write (Go ``archive/tar`` in PAX format): entry names without a leading
``/`` or ``./``, directories ending in ``/``, numeric uid/gid with empty user and group
names, whole-second modification times (clamped to ``SOURCE_DATE_EPOCH`` when given), no
access or change times, hardlinks detected by ``(dev, inode)`` within the layer, and
extended attributes as ``SCHILY.xattr.*`` PAX records. Entries are sorted by path with
parents before children, so the same tree always gives the same bytes and diff_id.
"""

from __future__ import annotations

import errno
import heapq
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from dockyard._xattrs import keep_xattr
from dockyard.errors import LayerError
from dockyard.layers._tarfmt import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    END_OF_ARCHIVE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    HashingWriter,
    encode_header,
    pad,
)
from dockyard.limits import current as current_limits
from dockyard.limits import hint

__all__ = ["LayerStats", "LowerNames", "TarWriter", "keep_xattr", "write_layer_from_dir"]

_CHUNK: Final = 1 << 20
_OVERLAY_OPAQUE_XATTRS: Final = ("trusted.overlay.opaque", "user.overlay.opaque")


@dataclass(frozen=True)
class LayerStats:
    """What a written layer is: its diff_id and the length of the uncompressed stream."""

    diff_id: str  # "sha256:..." of the uncompressed tar stream
    size: int  # bytes of the uncompressed tar stream


def _clean_arcname(arcname: str) -> str:
    name = arcname
    while name.startswith(("/", "./")):
        name = name[2:] if name.startswith("./") else name[1:]
    name = name.rstrip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise LayerError(f"invalid name for a layer entry: {arcname!r}")
    return "/".join(parts)


def _read_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    result: dict[str, bytes] = {}
    for name in sorted(names):
        if not keep_xattr(name):
            continue
        try:
            result[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return result


def _read_xattrs_fd(fd: int) -> dict[str, bytes]:
    """:func:`_read_xattrs` of an open file."""
    try:
        names = os.listxattr(fd)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    result: dict[str, bytes] = {}
    for name in sorted(names):
        if not keep_xattr(name):
            continue
        try:
            result[name] = os.getxattr(fd, name)
        except OSError as err:
            if err.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return result


_buffers = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer for file contents (one per thread, kept: a new one per
    layer cost an allocation and its page faults, 2.5% of an export of 100 small layers)."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(_CHUNK))
    return view


class TarWriter:
    """Writes layer entries one by one; callers add them in sorted order (parents first).

    Nothing is held in memory beyond one read buffer: file contents are streamed to ``out``
    while the sha256 (the diff_id) and the size are computed."""

    def __init__(self, out: BinaryIO, *, source_date_epoch: int | None = None) -> None:
        self._out = HashingWriter(out)
        self._sde = source_date_epoch
        self._links: dict[tuple[int, int], str] = {}
        self._closed = False

    def _mtime(self, st: os.stat_result) -> int:
        seconds = st.st_mtime_ns // 1_000_000_000
        if self._sde is not None and seconds > self._sde:
            return self._sde
        return seconds

    def add_path(
        self,
        src: Path,
        arcname: str,
        *,
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
    ) -> None:
        """Add ``src`` (not followed if it is a symlink) as ``arcname``.

        Regular files, directories, symlinks, character and block devices and fifos are
        written; sockets are skipped. A file whose ``(dev, inode)`` was already added becomes
        a hardlink to the first name. ``uid``/``gid``/``mode`` (permission bits, 0o7777)
        override what is on disk, for COPY --chown/--chmod."""
        path = os.fspath(src)
        try:
            st = os.lstat(path)
        except OSError as err:
            raise LayerError(f"cannot add {arcname!r} to the layer: {err.strerror}") from err
        self._add_stat(path, st, _clean_arcname(arcname), uid=uid, gid=gid, mode=mode)

    def _add_stat(
        self,
        path: str,
        st: os.stat_result,
        name: str,
        *,
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
        xattrs: dict[str, bytes] | None = None,
    ) -> None:
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return
        perm = stat.S_IMODE(st.st_mode) if mode is None else mode & 0o7777
        owner = st.st_uid if uid is None else uid
        group = st.st_gid if gid is None else gid
        mtime = self._mtime(st)
        if xattrs is None:
            try:
                xattrs = _read_xattrs(path)
            except OSError as err:
                raise LayerError(f"cannot read xattrs of {name!r}: {err.strerror}") from err
        attrs = xattrs

        def header(
            entry: str, typeflag: bytes, *, size: int = 0, linkname: str = "",
            devmajor: int = 0, devminor: int = 0,
        ) -> bytes:
            return encode_header(
                name=entry, typeflag=typeflag, mode=perm, uid=owner, gid=group, size=size,
                mtime=mtime, linkname=linkname, devmajor=devmajor, devminor=devminor,
                xattrs=attrs,
            )

        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                self._out.write(header(name, LNKTYPE, size=0, linkname=first))
                return
            self._links[key] = name

        if fmt == stat.S_IFREG:
            self._out.write(header(name, REGTYPE, size=st.st_size))
            self._copy_file(path, name, st.st_size)
        elif fmt == stat.S_IFDIR:
            self._out.write(header(name + "/", DIRTYPE, size=0))
        elif fmt == stat.S_IFLNK:
            try:
                target = os.readlink(path)
            except OSError as err:
                raise LayerError(f"cannot read symlink {name!r}: {err.strerror}") from err
            self._out.write(header(name, SYMTYPE, size=0, linkname=target))
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            self._out.write(header(name, CHRTYPE if fmt == stat.S_IFCHR else BLKTYPE, size=0,
                devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev)))
        elif fmt == stat.S_IFIFO:
            self._out.write(header(name, FIFOTYPE, size=0))
        else:
            raise LayerError(f"cannot add {name!r}: unsupported file type {fmt:o}")

    def _copy_file(self, path: str, name: str, size: int) -> None:
        fd = _open_file(path, name)
        try:
            self._copy_fd(fd, name, size)
        finally:
            os.close(fd)

    def _copy_fd(self, fd: int, name: str, size: int) -> None:
        view = _read_buffer()
        remaining = size
        while remaining:
            try:
                n = os.readv(fd, [view[: min(remaining, _CHUNK)]])
            except OSError as err:
                raise LayerError(f"cannot read {name!r}: {err.strerror}") from err
            if n == 0:
                raise LayerError(f"{name!r} shrank while it was being written to the layer")
            # a failed write (a closed pipe, a full disk) is the output's, not the file's
            self._out.write(view[:n])
            remaining -= n
        self._out.write(pad(size))

    def _add_single_file(self, fd: int, st: os.stat_result, name: str) -> None:
        """Add the regular file open as ``fd`` (one link: never a hard link of another
        entry), its xattrs read through the descriptor: what :meth:`_add_stat` writes for
        it, without a path lookup per call."""
        try:
            xattrs = _read_xattrs_fd(fd)
        except OSError as err:
            raise LayerError(f"cannot read xattrs of {name!r}: {err.strerror}") from err
        self._out.write(encode_header(
            name=name, typeflag=REGTYPE, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
            gid=st.st_gid, size=st.st_size, mtime=self._mtime(st), xattrs=xattrs))
        self._copy_fd(fd, name, st.st_size)

    def add_bytes(
        self, arcname: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
        mtime: int = 0,
    ) -> None:
        """Add a regular file with the given content (for heredocs and generated files)."""
        if self._sde is not None:
            mtime = min(mtime, self._sde)
        name = _clean_arcname(arcname)
        self._out.write(encode_header(
            name=name, typeflag=REGTYPE, mode=mode & 0o7777, uid=uid, gid=gid,
            size=len(data), mtime=mtime))
        self._out.write(data)
        self._out.write(pad(len(data)))

    def _marker(self, name: str) -> None:
        # Whiteout markers get mode 0, owner 0:0 and time 0, as containerd 2.x writes them.
        self._out.write(encode_header(
            name=name, typeflag=REGTYPE, mode=0, uid=0, gid=0, size=0, mtime=0))

    def add_whiteout(self, arcname: str) -> None:
        """Record that ``arcname`` (a path of a lower layer) was deleted: ``.wh.<name>``."""
        name = _clean_arcname(arcname)
        head, _, base = name.rpartition("/")
        self._marker((head + "/" if head else "") + WHITEOUT_PREFIX + base)

    def add_opaque(self, dir_arcname: str) -> None:
        """Mark a directory opaque (lower layers' contents hidden): ``<dir>/.wh..wh..opq``.
        Add it right after the directory's own entry."""
        self._marker(_clean_arcname(dir_arcname) + "/" + WHITEOUT_OPAQUE)

    def close(self) -> LayerStats:
        """Write the end-of-archive blocks and return the diff_id and size."""
        if not self._closed:
            self._out.write(END_OF_ARCHIVE)
            self._closed = True
        return LayerStats(diff_id=self._out.digest(), size=self._out.size)


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_file(path: str, name: str, dir_fd: int | None = None) -> int:
    try:
        try:
            return os.open(path, _FILE_FLAGS | os.O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            return os.open(path, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        raise LayerError(f"cannot read {name!r}: {err.strerror}") from err


def _walk_at(root: str) -> Iterator[tuple[str, str, int, str, os.stat_result]]:
    """Everything below ``root`` as ``(rel, path, dir_fd, name, lstat)``, depth-first,
    children sorted by their bytes: exactly the order of sorting by path components, so
    parents always come before their children. Each directory is listed and its entries
    ``lstat``ed through a descriptor of it (``dir_fd``, valid until the next entry), so an
    entry costs no walk of its full path. No recursion: a tree deeper than the path depth
    limit (:mod:`dockyard.limits`) is a LayerError."""
    max_depth = current_limits().max_path_depth
    try:
        top = os.open(root, _DIR_FLAGS)
    except OSError as err:
        raise LayerError(f"cannot list '.': {err.strerror}") from err
    stack: list[tuple[str, int, Iterator[str]]] = []
    try:
        stack.append(("", top, iter(_names_at(top, ""))))
        while stack:
            parent, fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            child_rel = f"{parent}/{name}" if parent else name
            if max_depth and len(stack) > max_depth:
                raise LayerError(
                    f"{child_rel[:60]!r}...: a path more than {max_depth} levels deep "
                    f"({hint('max_path_depth')})")
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise LayerError(f"cannot add {child_rel[:200]!r}: {err.strerror}") from err
            yield child_rel, os.path.join(root, child_rel), fd, name, st
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:
                    raise LayerError(f"cannot list {child_rel!r}: {err.strerror}") from err
                stack.append((child_rel, sub, iter(())))  # closed below if listing fails
                stack[-1] = (child_rel, sub, iter(_names_at(sub, child_rel)))
    finally:
        for _, fd, _ in stack:
            os.close(fd)


def _names_at(fd: int, rel: str) -> list[str]:
    try:
        with os.scandir(fd) as it:
            return sorted((entry.name for entry in it), key=_sort_key)
    except OSError as err:
        raise LayerError(f"cannot list {rel or '.'!r}: {err.strerror}") from err


def _selected(root: str, paths: Iterable[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    """The given entries plus their parent directories, sorted, each once."""
    wanted: set[str] = set()
    for p in paths:
        name = _clean_arcname(p)
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            wanted.add("/".join(parts[:i]))
    # by path components: NUL (which no name holds) in place of "/" sorts a parent first
    for rel in sorted(wanted, key=lambda n: _sort_key(n).replace(b"/", b"\0")):
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except OSError as err:
            raise LayerError(f"cannot add {rel!r} to the layer: {err.strerror}") from err
        yield rel, path, st


def write_layer_from_dir(
    root: Path,
    out: BinaryIO,
    *,
    source_date_epoch: int | None = None,
    overlay_whiteouts: bool = False,
    paths: Iterable[str] | None = None,
    lower_names: LowerNames | None = None,
) -> LayerStats:
    """Tar every entry below ``root`` (not root itself) to ``out``, sorted and reproducible.

    With ``overlay_whiteouts=True``, ``root`` is an overlay upperdir: a 0:0 character device
    becomes a ``.wh.<name>`` whiteout. A directory carrying the opaque xattr
    (``trusted.overlay.opaque=y`` or ``user.overlay.opaque=y``: ``rm -rf d && mkdir d``) is
    written as BuildKit writes it when ``lower_names`` is given: one ``.wh.<name>``
    whiteout for each name the lower layers show in it (and in its subdirectories) that the
    upper dir does not have, so that the layer is the one the native snapshotter and BuildKit
    make of the same change, whatever inode the new directory got. Without ``lower_names``
    it is followed by a ``.wh..wh..opq`` marker (the form of layers recorded before
    2026-12; their diff ids must still be made again). ``paths`` restricts the layer to
    those entries (relative to root, not recursive) and their parent directories. Returns
    the diff_id and size."""
    writer = TarWriter(out, source_date_epoch=source_date_epoch)
    base = os.fspath(root)
    opaque = _OpaqueDirs(writer, lower_names) if overlay_whiteouts and lower_names else None
    if paths is None:
        for rel, path, dir_fd, name, st in _walk_at(base):
            if opaque is not None:
                opaque.before(rel)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                fd = _open_file(name, rel, dir_fd)
                try:
                    writer._add_single_file(fd, st, rel)
                finally:
                    os.close(fd)
                continue
            _add_entry(writer, rel, path, st, overlay_whiteouts, opaque)
    else:
        for rel, path, st in _selected(base, paths):
            if opaque is not None:
                opaque.before(rel)
            _add_entry(writer, rel, path, st, overlay_whiteouts, opaque)
    if opaque is not None:
        opaque.before(None)
    return writer.close()


LowerNames = Callable[[str], "set[str] | None"]
"""The names the overlay's lower layers show in directory ``rel`` of the merged view (no
whiteouts, nothing an opaque directory hides), or None where they show no directory."""


def _components(rel: str) -> tuple[bytes, ...]:
    return tuple(os.fsencode(rel).split(b"/"))


class _OpaqueDirs:
    """Writes an overlay upper dir's opaque directories as whiteouts (see
    :func:`write_layer_from_dir`).

    The walk gives entries by path components; the whiteouts of an opaque directory's hidden
    names are made when the directory is reached and slotted in where their names would be,
    as the native snapshotter and the upper dir's own whiteouts place them."""

    def __init__(self, writer: TarWriter, lower_names: LowerNames) -> None:
        self._writer = writer
        self._lower_names = lower_names
        self._dirs: list[str] = []  # the walk's directories below (and at) an opaque one
        self._pending: list[tuple[tuple[bytes, ...], str]] = []  # whiteouts, a heap

    def before(self, rel: str | None) -> None:
        """Write the pending whiteouts that sort before ``rel`` (all of them for None)."""
        key = None if rel is None else _components(rel)
        while self._pending and (key is None or self._pending[0][0] < key):
            self._writer.add_whiteout(heapq.heappop(self._pending)[1])
        if rel is not None:
            while self._dirs and not rel.startswith(self._dirs[-1] + "/"):
                self._dirs.pop()

    def inside(self) -> bool:
        """Whether the entry just passed to :meth:`before` is below an opaque directory."""
        return bool(self._dirs)

    def directory(self, rel: str, path: str) -> None:
        """Directory ``rel`` was written. If it is opaque (over a directory of the lowers) or
        below an opaque one, queue a whiteout for each name the lowers show in it that the
        upper dir lacks."""
        if not self._dirs and not is_overlay_opaque(path):
            return
        below = self._lower_names(rel)
        if below is None and not self._dirs:
            return  # opaque over nothing: a plain new directory
        self._dirs.append(rel)
        if not below:
            return
        try:
            with os.scandir(path) as it:
                kept = {e.name for e in it if not _is_whiteout_entry(e)}
        except OSError as err:
            raise LayerError(f"cannot list {rel!r}: {err.strerror}") from err
        for name in below - kept:
            heapq.heappush(self._pending, (_components(f"{rel}/{name}"), f"{rel}/{name}"))


def _is_whiteout_entry(entry: os.DirEntry[str]) -> bool:
    st = entry.stat(follow_symlinks=False)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _add_entry(
    writer: TarWriter, rel: str, path: str, st: os.stat_result, overlay_whiteouts: bool,
    opaque: _OpaqueDirs | None,
) -> None:
    if overlay_whiteouts and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        # below an opaque directory written as whiteouts, the lowers' names decide
        if opaque is None or not opaque.inside():
            writer.add_whiteout(rel)
        return
    try:
        xattrs = _read_xattrs(path)
    except OSError as err:
        raise LayerError(f"cannot read xattrs of {rel!r}: {err.strerror}") from err
    writer._add_stat(path, st, rel, xattrs=xattrs)
    if overlay_whiteouts and stat.S_ISDIR(st.st_mode):
        if opaque is not None:
            opaque.directory(rel, path)
        elif is_overlay_opaque(path):
            writer.add_opaque(rel)


def is_overlay_opaque(path: str) -> bool:
    """Whether directory ``path`` carries overlayfs's opaque marker (trusted. or user.)."""
    for name in _OVERLAY_OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False
