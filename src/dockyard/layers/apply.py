"""The one safe layer applier: every unpack in dockyard (pull, load, import, cp, snapshots)
goes through :func:`apply_layer`.

Safety rests on root-scoped resolution, in the manner of containerd's ``fs.RootPath`` and
``securejoin``: an entry's parent directory is resolved one component at a time under the
root, following symlinks only as they would be followed inside a container whose ``/`` is
the root (an absolute symlink restarts at the root). The entry's own last component is never
followed: whatever is there is replaced. So no entry name, symlink or hardlink can make the
applier write outside the root. Where a layer *tries* to leave the root (an absolute or
``..``-escaping name, a hardlink to such a name, a symlink whose relative target climbs
above the root and is then written through, a whiteout of ``..``) the layer is refused with
a :class:`LayerError` naming the entry.

Whiteouts follow the OCI image spec: ``.wh.<name>`` deletes ``<name>`` from lower layers and
``<dir>/.wh..wh..opq`` hides everything lower layers put in ``<dir>``; neither touches what
the same layer adds. With ``overlay_whiteouts=True`` the root is an overlay lower/upper dir
and whiteouts are written in overlay's own form instead (0:0 character devices and the
``trusted.overlay.opaque`` xattr).

A whiteout or opaque marker whose directory is reached through a symlink (``r -> /`` with
``r/.wh..wh..opq``, a lower ``s -> /etc`` with ``s/.wh.passwd``) is refused, as containerd's
applier refuses it: followed, it would delete elsewhere in a flattened tree, while overlayfs
would show a plain directory, so ``run`` and ``export`` would see two different filesystems.
In overlay form the lower layers are consulted (``lowers``, top first), since the symlink
may come from one of them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, cast

from dockyard._fs import is_no_space
from dockyard.errors import LayerError, NoSpaceError
from dockyard.layers._tarfmt import WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from dockyard.layers.compress import open_decompressed
from dockyard.limits import Limits, hint, human_bytes
from dockyard.limits import current as current_limits

__all__ = ["ApplyStats", "LayerEntry", "apply_layer", "iter_layer_entries"]

_CHUNK: Final = 1 << 20
_ZEROS: Final = bytes(_CHUNK)
_MAX_SYMLINKS: Final = 40
# tarfile's stream reader copies its whole buffer on every read: keep it small.
_TAR_BUFSIZE: Final = 64 << 10
_OPAQUE_XATTR: Final = "trusted.overlay.opaque"
_USER_OPAQUE_XATTR: Final = "user.overlay.opaque"


@dataclass(frozen=True)
class ApplyStats:
    """What was applied: the diff_id (sha256 of the uncompressed tar stream; None unless
    asked for), its size in bytes, and the number of tar entries."""

    diff_id: str | None
    size: int
    entries: int


@dataclass(frozen=True)
class LayerEntry:
    """One entry of a layer as read from the tar, without its content."""

    name: str  # normalized: no leading "/" or "./", no trailing "/"
    type: str  # "file", "dir", "symlink", "hardlink", "char", "block", "fifo"
    mode: int  # permission bits, 0o7777
    uid: int
    gid: int
    size: int
    mtime: float
    linkname: str
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[str, bytes], ...]


class _HashingReader:
    """Reads from ``raw`` while counting, and hashing if asked: the applier's diff_id."""

    def __init__(self, raw: BinaryIO, hashing: bool) -> None:
        self._raw = raw
        self._sha = hashlib.sha256() if hashing else None
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if self._sha is not None:
            self._sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str | None:
        return None if self._sha is None else "sha256:" + self._sha.hexdigest()


_TYPES: Final = {
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _entry_type(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    kind = _TYPES.get(member.type)
    if kind is None:
        raise LayerError(f"{shown(member.name)}: unsupported tar entry type {member.type!r}")
    return kind


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found.append((key[13:], value.encode("utf-8", "surrogateescape")))
    return tuple(sorted(found))


def _normalize(name: str, what: str) -> list[str]:
    """Components of an archive path, ``..`` resolved lexically; refuses absolute names and
    names that climb above the root."""
    if name.startswith("/"):
        raise LayerError(f"{what} {shown(name)}: absolute path in layer")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LayerError(f"{what} {shown(name)}: path escapes the root")
            parts.pop()
        else:
            parts.append(part)
    return parts


def shown(name: str, limit: int = 120) -> str:
    """``name`` as an error shows it: quoted, and cut short when it is very long."""
    if len(name) <= limit:
        return repr(name)
    return repr(name[: limit // 2]) + f"...({len(name)} characters)...{name[-limit // 4:]!r}"


class _Counter:
    """Holds one archive to the entry, size and depth limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries = 0
        self.unpacked = 0

    def check(self, member: tarfile.TarInfo) -> None:
        lim = self.limits
        self.entries += 1
        if member.size < 0:
            raise LayerError(f"entry {shown(member.name)}: negative size {member.size}")
        if lim.max_entries and self.entries > lim.max_entries:
            raise LayerError(f"more than {lim.max_entries:,} entries ({hint('max_entries')})")
        if member.isreg():
            self.unpacked += max(member.size, 0)
            if lim.max_layer_size and self.unpacked > lim.max_layer_size:
                raise LayerError(
                    f"entry {shown(member.name)}: the files add up to more than "
                    f"{human_bytes(lim.max_layer_size)} ({hint('max_layer_size')})")
        if lim.max_path_depth:
            depth = sum(1 for part in member.name.split("/") if part not in ("", "."))
            if depth > lim.max_path_depth:
                raise LayerError(
                    f"entry {shown(member.name)}: {depth} levels deep, more than "
                    f"{lim.max_path_depth} ({hint('max_path_depth')})")


def _entries(stream: BinaryIO) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """The members of an (uncompressed) tar stream, one at a time, without keeping them."""
    try:
        tf = tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFSIZE)  # noqa: SIM115
    except tarfile.ReadError as err:
        if "empty file" in str(err):
            return
        raise LayerError(f"not a valid layer tar: {err}") from err
    except Exception as err:
        raise LayerError(f"not a valid layer tar: {err}") from err
    with tf:
        while True:
            try:
                member = tf.next()
            except Exception as err:
                raise LayerError(f"corrupt layer tar: {err}") from err
            if member is None:
                return
            tf.members.clear()  # type: ignore[attr-defined]  # stream mode would otherwise keep every header in memory
            yield tf, member


def check_tar(stream: BinaryIO, limits: Limits | None = None) -> int:
    """Read a whole (uncompressed) tar stream, holding it to ``limits``; returns its entry
    count. LayerError for a corrupt archive or one past a limit. Memory stays bounded."""
    counter = _Counter(limits or current_limits())
    for _tf, member in _entries(stream):
        counter.check(member)
        _entry_type(member)
        if member.sparse is not None:
            _check_sparse(member)
    return counter.entries


def iter_layer_entries(stream: BinaryIO) -> Iterator[LayerEntry]:
    """The entries of a layer (any supported compression), in archive order."""
    counter = _Counter(current_limits())
    for _tf, member in _entries(open_decompressed(stream)):
        counter.check(member)
        try:
            parts = _normalize(member.name, "entry")
            yield LayerEntry(
                name="/".join(parts), type=_entry_type(member), mode=member.mode & 0o7777,
                uid=member.uid, gid=member.gid, size=member.size, mtime=member.mtime,
                linkname=member.linkname, devmajor=member.devmajor,
                devminor=member.devminor, xattrs=_xattrs(member),
            )
        except LayerError:
            raise
        except Exception as err:
            raise LayerError(f"entry {shown(member.name)}: {err}") from err


def apply_layer(
    stream: BinaryIO, root: Path, *, overlay_whiteouts: bool = False,
    limits: Limits | None = None, devices: bool = True,
    lowers: list[Path] | None = None, hash_tar: bool = False,
) -> ApplyStats:
    """Unpack a layer (gzip/zstd/bzip2/xz/plain, autodetected) into ``root``.

    Nothing outside ``root`` is ever touched. With ``overlay_whiteouts=False`` whiteouts
    delete from ``root`` (flattening layers into one tree); with ``overlay_whiteouts=True``
    ``root`` is an overlay lower/upper dir and whiteouts are written in overlay form (0:0
    character devices, ``trusted.overlay.opaque=y``) and ``lowers`` are the overlay lower
    dirs under it, top first. Directory times and modes are set last.
    Sparse files stay sparse (so do runs of zeros a MiB long). The layer is held to
    ``limits`` (default :func:`dockyard.limits.current`): decompressed size, entries, path
    depth. ``devices=False`` refuses character and block devices (for trees unpacked on the
    host outside the store, such as a build context). ``hash_tar`` computes the stream's
    diff_id on the way (``ApplyStats.diff_id``); the store's unpacks need none (a stored
    tar's blob name is its digest, checked when it was written; a pulled blob is checked as
    it is read, ``store/pulled.py``), and hashing cost them ~0.2 s per 300 MB. Raises
    :class:`LayerError` for an unsafe or corrupt layer, naming the entry, and
    :class:`NoSpaceError` when the disk fills up."""
    limits = limits or current_limits()
    try:
        if not os.path.isdir(root):
            os.makedirs(root, exist_ok=True)
            os.chmod(root, 0o755)  # the root of a snapshot is "/" in a container
        real_root = os.path.realpath(root)
        reader = _HashingReader(open_decompressed(stream, limits), hash_tar)
    except LayerError:
        raise
    except Exception as err:
        if is_no_space(err):
            raise NoSpaceError("a layer", str(root)) from err
        raise LayerError(f"cannot open layer for {root}: {err}") from err
    applier = _Applier(real_root, overlay_whiteouts=overlay_whiteouts, devices=devices,
                       lowers=[os.fspath(p) for p in lowers or ()])
    counter = _Counter(limits)
    for tf, member in _entries(reader):  # type: ignore[arg-type]
        counter.check(member)
        try:
            applier.apply(tf, member)
        except LayerError:
            raise
        except Exception as err:
            if is_no_space(err):
                raise NoSpaceError("a layer", str(root)) from err
            raise LayerError(f"entry {shown(member.name)}: {_describe(err)}") from err
    try:
        applier.finish()
        reader.drain()
    except LayerError:
        raise
    except Exception as err:
        if is_no_space(err):
            raise NoSpaceError("a layer", str(root)) from err
        raise LayerError(f"cannot finish applying layer: {_describe(err)}") from err
    return ApplyStats(diff_id=reader.digest(), size=reader.size, entries=counter.entries)


def _check_sparse(member: tarfile.TarInfo) -> list[tuple[int, int]]:
    """The data blocks of a sparse member, refused unless in order, apart and in the file."""
    blocks: list[tuple[int, int]] = []
    end = 0
    sparse = cast("list[tuple[int, int]]", member.sparse or [])  # typeshed says int
    for offset, size in sparse:
        if size == 0:
            continue  # old GNU headers pad their map with (0, 0); GNU tar ends it with (size, 0)
        if offset < end or size < 0 or offset + size > member.size:
            raise LayerError(f"entry {shown(member.name)}: invalid sparse map "
                             f"(block {offset}+{size} of a {member.size}-byte file)")
        blocks.append((offset, size))
        end = offset + size
    return blocks


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _remove(path: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _DirMeta:
    path: str
    mode: int
    atime_ns: int
    mtime_ns: int


def _lower_kind(lowers: list[str], parts: list[str]) -> int | None:
    """The file type (``S_IFMT``) at ``parts`` in the merged view of overlay lower dirs
    (top first), or None where nothing is there (missing, whited out, hidden by an opaque
    directory or by a non-directory above it)."""
    for lower in lowers:
        hidden_below = False
        for depth in range(1, len(parts) + 1):
            path = os.path.join(lower, *parts[:depth])
            st = _lstat(path)
            if st is None:
                break
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None  # an overlay whiteout
            if depth == len(parts):
                return stat.S_IFMT(st.st_mode)
            if not stat.S_ISDIR(st.st_mode):
                return None  # a file or symlink here: nothing deeper in the merged view
            if _is_opaque(path):
                hidden_below = True
        if hidden_below:
            return None
    return None


def _lower_dir_stat(lowers: list[str], parts: list[str]) -> os.stat_result | None:
    """The stat of the directory at ``parts`` in the merged view of overlay lower dirs (top
    first), or None where the merged view has no directory there."""
    if _lower_kind(lowers, parts) != stat.S_IFDIR:
        return None
    for lower in lowers:
        st = _lstat(os.path.join(lower, *parts))
        if st is not None:
            return st if stat.S_ISDIR(st.st_mode) else None
    return None


def _is_opaque(path: str) -> bool:
    for name in (_OPAQUE_XATTR, _USER_OPAQUE_XATTR):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class _Applier:
    def __init__(self, root: str, *, overlay_whiteouts: bool, devices: bool = True,
                 lowers: list[str] | None = None) -> None:
        self.root = root
        self.overlay = overlay_whiteouts
        self.devices = devices
        self.lowers = lowers or []
        self.is_root = os.geteuid() == 0
        from dockyard.rootless.idmap import in_user_namespace

        # rootless: no device node can be made, and ids outside the mapping do not exist
        self.userns = self.is_root and in_user_namespace()
        self.written: set[str] = set()  # paths this layer created: whiteouts spare them
        self.dirs: list[_DirMeta] = []
        # parents the archive does not list, made on the way: given fixed metadata at the
        # end (an explicit entry for the path later in the archive takes over)
        self.implicit: dict[str, tuple[str, ...]] = {}
        self.resolved: dict[tuple[str, ...], str] = {}

    # --- path resolution -------------------------------------------------------------

    def resolve_dir(self, parts: list[str], entry: str, *, create: bool) -> str | None:
        """The real path of the directory ``parts`` inside the root, following symlinks
        within the root. Missing directories are created when ``create``, else None."""
        key = tuple(parts)
        cached = self.resolved.get(key)
        if cached is not None:
            return cached
        cur: list[str] = []
        todo: deque[str] = deque(parts)
        links = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not cur:
                    raise LayerError(f"entry {entry!r}: a symlink in its path leads out of the root")
                cur.pop()
                continue
            path = os.path.join(self.root, *cur, part)
            st = _lstat(path)
            if st is None:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)  # a parent the archive does not list: 0755, any umask
                self.written.add(path)
                cur.append(part)
                self.implicit[path] = tuple(cur)
            elif stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise LayerError(f"entry {entry!r}: too many levels of symbolic links")
                target = os.readlink(path)
                if target.startswith("/"):
                    cur = []
                todo.extendleft(reversed(target.split("/")))
            elif stat.S_ISDIR(st.st_mode):
                cur.append(part)
            else:
                raise LayerError(
                    f"entry {entry!r}: {'/'.join([*cur, part])!r} is not a directory")
        real = os.path.join(self.root, *cur)
        self.resolved[key] = real
        return real

    def marker_dir(self, parts: list[str], entry: str, *, create: bool) -> str | None:
        """The directory ``parts`` a whiteout or opaque marker acts in, never reached through
        a symlink (this layer's or, in overlay form, a lower layer's): refused with a
        LayerError. Missing directories are created when ``create``, else None."""
        cur = self.root
        for depth, part in enumerate(parts, 1):
            path = os.path.join(cur, part)
            st = _lstat(path)
            kind = None if st is None else stat.S_IFMT(st.st_mode)
            if kind is None and self.lowers:
                kind = _lower_kind(self.lowers, parts[:depth])
            if kind == stat.S_IFLNK:
                raise LayerError(
                    f"entry {entry!r}: whiteout reached through the symlink "
                    f"{'/'.join(parts[:depth])!r}")
            if kind is not None and kind != stat.S_IFDIR:
                raise LayerError(
                    f"entry {entry!r}: {'/'.join(parts[:depth])!r} is not a directory")
            if st is None:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                self.written.add(path)
                self.implicit[path] = tuple(parts[:depth])
            cur = path
        return cur

    def finish_implicit(self) -> None:
        """Parents the archive did not list get the same metadata on every unpack, not the
        moment they were made (a flattened export of the image would differ run to run):
        in overlay form, that of the lower directory they shadow, so the merged view is
        unchanged; otherwise 0755, root's, and time 0. Deepest first."""
        for path, parts in sorted(self.implicit.items(), key=lambda kv: -len(kv[1])):
            st = _lstat(path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            lower = _lower_dir_stat(self.lowers, list(parts)) if self.lowers else None
            if lower is not None:
                if self.is_root:
                    with contextlib.suppress(OSError):  # ids outside a rootless mapping
                        os.lchown(path, lower.st_uid, lower.st_gid)
                os.chmod(path, stat.S_IMODE(lower.st_mode))
                os.utime(path, ns=(lower.st_atime_ns, lower.st_mtime_ns), follow_symlinks=False)
            else:
                os.utime(path, ns=(0, 0), follow_symlinks=False)
        self.implicit.clear()

    def forget_resolutions(self) -> None:
        self.resolved.clear()

    def remove(self, path: str, st: os.stat_result) -> None:
        _remove(path, st)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.forget_resolutions()
        if stat.S_ISDIR(st.st_mode):
            # A symlink may take this name later: directory metadata recorded below it
            # must not be applied through that symlink at the end.
            inside = path + "/"
            self.dirs = [d for d in self.dirs if d.path != path and not d.path.startswith(inside)]

    # --- entries ---------------------------------------------------------------------

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        parts = _normalize(name, "entry")
        if not parts:
            if member.isdir():
                return  # the root itself: its metadata belongs to whoever owns root
            raise LayerError(f"entry {name!r}: a non-directory in place of the root")
        for part in parts[:-1]:
            if part.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"entry {name!r}: whiteout name used as a directory")
        base = parts[-1]
        if base == WHITEOUT_OPAQUE:
            self.opaque(member, parts[:-1])
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other aufs metadata (.wh..wh.plnk and friends) is never content
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(member, parts[:-1], base[len(WHITEOUT_PREFIX):])
            return
        kind = _entry_type(member)
        if kind in ("char", "block") and not self.devices:
            raise LayerError(f"entry {shown(name)}: a device node, which is not allowed here")
        parent = self.resolve_dir(parts[:-1], name, create=True)
        assert parent is not None
        path = os.path.join(parent, base)
        existing = _lstat(path)
        if existing is not None and not (kind == "dir" and stat.S_ISDIR(existing.st_mode)):
            self.remove(path, existing)
            existing = None
        if kind in ("char", "block") and self.userns:
            # A user namespace cannot make device nodes: the entry is left out, as Docker's
            # applier does there, in both forms alike (nothing at the path: in overlay form
            # a whiteout hides what a lower layer had there).
            if self.overlay and _lower_kind(self.lowers, parts) is not None:
                self.mknod(path, stat.S_IFCHR, 0, name)
            self.written.add(path)
            return
        self.written.add(path)
        mtime_ns = round(member.mtime * 1_000_000_000)
        if kind == "dir":
            self.implicit.pop(path, None)
            if existing is None:
                os.mkdir(path, 0o700)
            self.set_owner(path, member)
            self.set_xattrs(path, member)
            self.dirs.append(_DirMeta(path, member.mode & 0o7777, mtime_ns, mtime_ns))
            return
        if kind == "hardlink":
            if self.hardlink(member, path):
                # As containerd's and BuildKit's appliers: the link header's owner, mode and
                # times land on the shared inode, so the later header wins for every name.
                self.set_owner(path, member)
                if not stat.S_ISLNK(os.lstat(path).st_mode):
                    os.chmod(path, member.mode & 0o7777)
                self.set_xattrs(path, member)
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            return
        if kind == "file":
            self.write_file(tf, member, path)
        elif kind == "symlink":
            os.symlink(member.linkname, path)
            self.forget_resolutions()
        elif kind in ("char", "block"):
            fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            self.mknod(path, fmt | (member.mode & 0o7777),
                       os.makedev(member.devmajor, member.devminor), name)
        else:
            os.mkfifo(path, member.mode & 0o7777)
        self.set_owner(path, member)
        if kind != "symlink":
            os.chmod(path, member.mode & 0o7777)
        self.set_xattrs(path, member)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def write_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        """The file's data; holes (a sparse entry's, and zero runs of a whole chunk) are
        skipped, so they take no space on disk."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            if member.size:
                exfile = tf.extractfile(member)
                assert exfile is not None
                # The unbuffered reader under it: its seek just moves to a sparse block (the
                # stream under it only ever moves forward), reading a hole costs nothing.
                src = exfile.raw  # type: ignore[attr-defined]
                blocks = ([(0, member.size)] if member.sparse is None
                          else _check_sparse(member))
                for offset, size in blocks:
                    if offset:
                        src.seek(offset)
                    pos = offset
                    end = offset + size
                    while pos < end:
                        data = src.read(min(end - pos, _CHUNK))
                        if not data:
                            raise LayerError(f"entry {shown(member.name)}: truncated file data")
                        if not _ZEROS.startswith(data):
                            view = memoryview(data)
                            at = pos
                            while view:
                                n = os.pwrite(fd, view, at)
                                view = view[n:]
                                at += n
                        pos += len(data)
                os.ftruncate(fd, member.size)
        finally:
            os.close(fd)

    def hardlink(self, member: tarfile.TarInfo, path: str) -> bool:
        """Link ``path`` to the member's target; False when it names itself (no-op)."""
        what = f"hardlink {member.name!r} ->"
        target_parts = _normalize(member.linkname, what)
        if not target_parts:
            raise LayerError(f"{what} {member.linkname!r}: cannot link to the root")
        parent = self.resolve_dir(target_parts[:-1], member.name, create=False)
        source = None if parent is None else os.path.join(parent, target_parts[-1])
        st = None if source is None else _lstat(source)
        if source is None or st is None:
            raise LayerError(f"{what} {member.linkname!r}: target not found in the layer")
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{what} {member.linkname!r}: target is a directory")
        if source == path:
            return False
        os.link(source, path, follow_symlinks=False)
        return True

    def mknod(self, path: str, mode: int, device: int, name: str) -> None:
        try:
            os.mknod(path, mode, device)
        except PermissionError as err:
            why = ("this process may not create device nodes (no CAP_MKNOD here)"
                   if self.is_root else "device nodes need root")
            raise LayerError(
                f"entry {shown(name)}: cannot create a device node ({err.strerror}); {why}"
            ) from err

    def set_owner(self, path: str, member: tarfile.TarInfo) -> None:
        if self.is_root:
            try:
                os.lchown(path, member.uid, member.gid)
            except OSError as err:
                # an id outside a rootless mapping (single-id, or above the subordinate
                # range): the entry stays root's, as rootless Podman's ignore_chown_errors
                if not (self.userns and err.errno == errno.EINVAL):
                    raise

    def set_xattrs(self, path: str, member: tarfile.TarInfo) -> None:
        for key, value in _xattrs(member):
            if key.startswith(("trusted.overlay.", "user.overlay.")):
                continue  # overlay's own bookkeeping would change what the mount shows
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as err:
                security = key.startswith("security.")
                unsupported = err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
                denied = err.errno in (errno.EPERM, errno.EACCES) and not self.is_root
                if not security and (unsupported or denied):
                    continue
                raise LayerError(
                    f"entry {member.name!r}: cannot set xattr {key}: {err.strerror}") from err

    # --- whiteouts -------------------------------------------------------------------

    def whiteout(self, member: tarfile.TarInfo, parent_parts: list[str], target: str) -> None:
        name = member.name
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise LayerError(f"entry {name!r}: invalid whiteout of {target!r}")
        if member.isdir():
            raise LayerError(f"entry {name!r}: a whiteout must not be a directory")
        parent = self.marker_dir(parent_parts, name, create=self.overlay)
        if parent is None:
            return
        path = os.path.join(parent, target)
        if path in self.written:
            return  # a whiteout only hides what lower layers had
        existing = _lstat(path)
        if existing is not None:
            self.remove(path, existing)
        if self.overlay:
            self.mknod(path, stat.S_IFCHR, 0, name)
            self.written.add(path)

    def opaque(self, member: tarfile.TarInfo, dir_parts: list[str]) -> None:
        name = member.name
        if not dir_parts:
            raise LayerError(f"entry {name!r}: the root cannot be made opaque")
        if member.isdir() or member.issym() or member.islnk():
            raise LayerError(f"entry {name!r}: an opaque marker must be an empty file")
        directory = self.marker_dir(dir_parts, name, create=self.overlay)
        if directory is None:
            return
        if self.overlay:
            self.set_opaque(directory, name)
            return
        self.remove_lower(directory)

    def remove_lower(self, directory: str) -> None:
        """Delete what lower layers put below ``directory``, sparing what this layer wrote
        (the marker may come after some of the directory's new children)."""
        with os.scandir(directory) as it:
            children = [(e.path, e.is_dir(follow_symlinks=False)) for e in it]
        for path, is_dir in children:
            if path not in self.written:
                st = _lstat(path)
                if st is not None:
                    self.remove(path, st)
            elif is_dir:
                self.remove_lower(path)

    def set_opaque(self, directory: str, name: str) -> None:
        try:
            os.setxattr(directory, _OPAQUE_XATTR, b"y", follow_symlinks=False)
        except PermissionError as err:
            try:
                os.setxattr(directory, _USER_OPAQUE_XATTR, b"y", follow_symlinks=False)
            except OSError:
                raise LayerError(
                    f"entry {name!r}: cannot mark directory opaque: {err.strerror}") from err

    def finish(self) -> None:
        # Children first, so a parent's restrictive mode never blocks setting a child.
        self.finish_implicit()
        for meta in reversed(self.dirs):
            st = _lstat(meta.path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            os.chmod(meta.path, meta.mode)
            os.utime(meta.path, ns=(meta.atime_ns, meta.mtime_ns), follow_symlinks=False)
