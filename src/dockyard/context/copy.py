"""The COPY/ADD file operation, with BuildKit's file-op copy semantics.

Rules, as BuildKit's Dockerfile frontend and fsutil's copier apply them:

* sources are relative to the source root (the context, or another stage's rootfs); a
  wildcard (Go ``filepath.Match``) that matches nothing copies nothing, a plain source that
  is missing is an error naming it (and saying when .dockerignore excluded it);
* ``dest`` is relative to WORKDIR; it names a directory when it ends in ``/`` (or is ``.``),
  or when it already is one; several sources need such a directory;
* a directory source copies its *contents*; a file into a directory keeps its base name;
  missing parent directories are created 0755, owned by the ``--chown`` user when given;
* a top-level source that is a symlink is followed, within the source root only; symlinks
  below it are copied as symlinks; hardlinks within one copy stay hardlinks;
* without ``--chown``, local-context files become 0:0 and another stage's keep their ids;
  modes (special bits too), mtimes and xattrs are kept; ``--chmod`` replaces permission bits;
* ``--parents`` keeps each source's path relative to the root, or below a ``/./`` pivot;
* ``--exclude`` patterns match paths below each source (and wildcard matches themselves);
* ADD unpacks a local archive (by content, any compression) into ``dest``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard._fs import no_space
from dockyard._xattrs import keep_xattr
from dockyard.context._paths import (
    EntryStat,
    StatLike,
    Walk,
    WalkGroup,
    missing_source_error,
    parent_dirs,
    rel_to,
    resolve_wildcards,
    root_path,
    root_path_nofollow,
    select_match,
    split_pivot,
    split_wildcards,
)
from dockyard.context.dockerignore import PatternMatcher, go_clean, has_wildcards
from dockyard.errors import ContextError, SourceChangedError

if TYPE_CHECKING:
    from dockyard.context.hashing import FileMeta, SelectionDigest

StrPath = str | os.PathLike[str]

_SENDFILE_CHUNK = 1 << 30
_COPY_WORKERS = 4  # threads for copying many files (capped by the CPUs)
_PARALLEL_MIN_FILES = 64
_CHUNK_FILES = 32

__all__ = [
    "ChmodSpec",
    "add_fetched",
    "context_view",
    "copy_into",
    "parse_chmod",
    "resolve_chown",
    "resolve_dest",
    "write_heredocs",
]


@dataclass(frozen=True, slots=True)
class ChmodSpec:
    """A ``--chmod`` value: octal bits, or symbolic clauses (``u+x,go-w``) applied per entry."""

    octal: int | None = None
    clauses: tuple[tuple[str, str, str], ...] = ()  # (who, op, perms)

    def apply(self, mode: int, is_dir: bool) -> int:
        """The new permission bits (incl. special bits) for an entry whose mode is ``mode``."""
        if self.octal is not None:
            # fsutil (tonistiigi/fsutil#168, BuildKit #3920): the flag's bits replace the
            # permissions, its setuid/setgid/sticky bits are added to the source's own.
            return (mode & 0o7000) | self.octal
        current = mode & 0o7777
        for who, op, perms in self.clauses:
            mask_who = 0
            for w in who or "a":
                mask_who |= {"u": 0o4700, "g": 0o2070, "o": 0o0007, "a": 0o6777}[w]
            bits = 0
            for p in perms:
                if p == "r":
                    bits |= 0o444
                elif p == "w":
                    bits |= 0o222
                elif p == "x":
                    bits |= 0o111
                elif p == "X":
                    if is_dir or current & 0o111:
                        bits |= 0o111
                elif p == "s":
                    bits |= 0o6000
                elif p == "t":
                    bits |= 0o1000
            bits &= mask_who | (0o1000 if "t" in perms else 0)
            if op == "+":
                current |= bits
            elif op == "-":
                current &= ~bits
            else:
                current = (current & ~mask_who) | bits
        return current


def parse_chmod(spec: str) -> ChmodSpec:
    """Parse ``--chmod``: octal (``755``, ``0644``, ``4755``) or symbolic (``u+x,g-w``)."""
    text = spec.strip()
    if text and all(c in "01234567" for c in text):
        value = int(text, 8)
        if value > 0o7777:
            raise ContextError(f"invalid chmod value {spec!r}")
        return ChmodSpec(octal=value)
    clauses: list[tuple[str, str, str]] = []
    for clause in text.split(","):
        who = ""
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            who += clause[i]
            i += 1
        if i >= len(clause) or clause[i] not in "+-=":
            raise ContextError(f"invalid chmod value {spec!r}")
        op = clause[i]
        perms = clause[i + 1 :]
        if any(p not in "rwxXst" for p in perms):
            raise ContextError(f"invalid chmod value {spec!r}")
        clauses.append((who, op, perms))
    return ChmodSpec(clauses=tuple(clauses))


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    path = root_path(rootfs, f"/etc/{name}")
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_chown(spec: str, rootfs: Path) -> tuple[int, int]:
    """Resolve a ``--chown`` value to ``(uid, gid)`` using the target rootfs.

    ``user`` alone takes the user's primary group (a numeric user without a group gets
    ``gid = uid``, as BuildKit); names are looked up in ``/etc/passwd`` and ``/etc/group``
    of ``rootfs``; an unknown name is a ContextError.
    """
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise ContextError(f"invalid --chown value {spec!r}")
    if user.isdigit():
        uid = int(user)
        gid = uid
    else:
        for fields in _read_db(rootfs, "passwd"):
            if len(fields) >= 4 and fields[0] == user:
                try:
                    uid, gid = int(fields[2]), int(fields[3])
                except ValueError:
                    continue
                break
        else:
            raise ContextError(f"unable to find user {user}: no matching entries in passwd file")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for fields in _read_db(rootfs, "group"):
                if len(fields) >= 3 and fields[0] == group:
                    try:
                        gid = int(fields[2])
                    except ValueError:
                        continue
                    break
            else:
                raise ContextError(
                    f"unable to find group {group}: no matching entries in group file"
                )
    return uid, gid


def resolve_dest(dest: str, workdir: str) -> str:
    """``dest`` made absolute against WORKDIR, keeping a trailing ``/`` that marks a dir."""
    is_dir = dest in ("", ".") or dest.endswith("/") or dest.endswith("/.")
    joined = dest if dest.startswith("/") else (workdir or "/").rstrip("/") + "/" + dest
    cleaned = go_clean("/" + joined)
    if is_dir and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


@dataclass
class _Copier:
    chown: tuple[int, int] | None
    chmod: ChmodSpec | None
    preserve_owner: bool
    utime: int | None
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    inodes: dict[tuple[int, int], StrPath] = field(default_factory=dict)
    # What the step's key was made of: the copy must copy exactly that (see copy_into)
    expected: _Expected | None = None

    def owner(self, st: StatLike) -> tuple[int, int]:
        if self.chown is not None:
            return self.chown
        if self.preserve_owner:
            return st.st_uid, st.st_gid
        return 0, 0

    def mkdir_all(self, path: Path, root: Path) -> None:
        """fsutil's MkdirAll: create missing dirs 0755 with the chown user and utime."""
        missing: list[Path] = []
        current = path
        while current != root and not os.path.lexists(current):
            missing.append(current)
            current = current.parent
        if os.path.lexists(current) and not current.is_dir():
            raise ContextError(f"cannot create directory {rel_to(root, path)}: not a directory")
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            os.chmod(directory, 0o755)
            if self.chown is not None and self.is_root:
                os.lchown(directory, *self.chown)
            if self.utime is not None:
                os.utime(directory, (self.utime, self.utime))

    def apply_info(self, src: StrPath, st: StatLike, target: StrPath) -> None:
        is_link = stat.S_ISLNK(st.st_mode)
        uid, gid = self.owner(st)
        if self.is_root:
            os.lchown(target, uid, gid)
        if not is_link:
            os.chmod(target, self.target_mode(st))
        _copy_xattrs(src, target)
        os.utime(target, ns=self.target_times(st), follow_symlinks=False)

    def target_mode(self, st: StatLike) -> int:
        """The permission bits (incl. special bits) a copy of a non-symlink ``st`` gets."""
        mode = stat.S_IMODE(st.st_mode)
        if self.chmod is not None:
            mode = self.chmod.apply(mode, stat.S_ISDIR(st.st_mode))
        return mode

    def target_times(self, st: StatLike) -> tuple[int, int]:
        """(atime, mtime) in ns for a copy of ``st``: the source's, or ``utime`` when set."""
        if self.utime is not None:
            return (self.utime * 1_000_000_000, self.utime * 1_000_000_000)
        return (st.st_atime_ns, st.st_mtime_ns)

    def copy_regular(self, src: StrPath, st: StatLike, target: StrPath) -> None:
        """Create ``target`` (it must not exist) as a copy of regular file ``src``, content and
        metadata, all through the two file descriptors: the same result as copying and then
        :meth:`apply_info`, with a third of the syscalls and no path lookups after the open."""
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst_fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                with no_space("a file of the COPY", target):
                    _copy_data(src_fd, dst_fd, st.st_size)
                if self.expected is not None:
                    self.expected.copied(os.fspath(src), src_fd, st, target)
                if self.is_root:
                    os.fchown(dst_fd, *self.owner(st))
                os.fchmod(dst_fd, self.target_mode(st))
                _copy_xattrs_fd(src_fd, dst_fd)
                os.utime(dst_fd, ns=self.target_times(st))
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)

    def copy_entry(self, src: StrPath, st: StatLike, target: StrPath) -> bool:
        """Copy one non-directory entry (info applied); False if it was skipped."""
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(mode) and (
            st.st_nlink == 1
            or key not in self.inodes
            # the same source selected again (``COPY d d /x/``): copied again, not linked
            # to itself
            or os.fspath(self.inodes[key]) == os.fspath(target)
        ):
            # The common case, a new file: create it exclusively (no lookup beforehand) and
            # replace what is there only when that fails.
            try:
                self.copy_regular(src, st, target)
            except FileExistsError:
                _clear_target(target)
                self.copy_regular(src, st, target)
            if st.st_nlink > 1:
                self.inodes[key] = target
            return True
        if os.path.lexists(target):
            _clear_target(target)
        if stat.S_ISREG(mode):
            os.link(self.inodes[key], target)
            return True
        if stat.S_ISLNK(mode):
            link = os.readlink(src)
            if self.expected is not None:
                self.expected.linked(link, st)
            os.symlink(link, target)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            if not self.is_root:
                return False
            os.mknod(target, mode, st.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target)
        else:
            return False  # sockets are not copied
        self.apply_info(src, st, target)
        return True

    def make_dir(self, st: StatLike, target: Path, top: bool) -> str | None:
        """Create (or reuse) a directory: ``"new"`` if it was made, ``"old"`` if it was
        there (its metadata is applied later either way), None for a top directory that
        was there (left as it is)."""
        if os.path.lexists(target):
            if target.is_symlink() or not target.is_dir():
                raise ContextError(f"cannot copy to non-directory: {target.name}")
            if top:
                return None
            os.chmod(target, stat.S_IMODE(st.st_mode))
            return "old"
        target.mkdir(mode=0o700)
        return "new"

    def copy_tree(
        self, walk: Walk, group: WalkGroup, target: Path, direct: _Direct | None = None,
    ) -> None:
        """Copy one group of a walk (pre-order; its first entry the source itself) to
        ``target``.

        A directory source copies its contents into ``target``; directory metadata is
        applied after everything below it, so their mtimes stay as the source's. The
        directories and everything but unlinked regular files are made in a first pass, the
        regular files in a second one (on threads), read from the walk as they are copied.

        With ``direct``, a directory this copy makes below ``target`` is made now and all
        that goes below it (its metadata last) is left to ``direct`` (see :class:`_Direct`).
        """
        top = walk.stat(group.start)
        if not stat.S_ISDIR(top.st_mode):
            if self.expected is not None and not (
                    stat.S_ISREG(top.st_mode) and top.st_nlink == 1):
                self.expected.entry(group.top, top)
            self.copy_entry(group.top, top, target)
            return
        if self.expected is not None:
            self.expected.entry(group.top, top)
        pending_dirs: list[tuple[StrPath, StatLike, Path]] = []
        if self.make_dir(top, target, top=True):
            pending_dirs.append((group.top, top, target))
        src_base = group.top if group.top.endswith("/") else group.top + "/"
        self._copy_below(walk, group, group.start, group.end, os.fspath(target) + "/",
                         src_base, pending_dirs, direct)

    def _copy_below(
        self, walk: Walk, group: WalkGroup, lo: int, hi: int, base: str, src_base: str,
        pending_dirs: list[tuple[StrPath, StatLike, Path]], direct: _Direct | None,
    ) -> None:
        """Copy the entries ``lo+1 .. hi-1`` of ``group`` (all that is below its directory
        entry ``lo``, which exists in the target), each to ``base + inner``; then apply the
        metadata of ``pending_dirs`` (and of the directories made here), deepest first."""
        self.copy_files(self.make_below(walk, group, lo, hi, base, src_base, pending_dirs,
                                        direct))
        self.apply_dirs(pending_dirs)

    def make_below(
        self, walk: Walk, group: WalkGroup, lo: int, hi: int, base: str, src_base: str,
        pending_dirs: list[tuple[StrPath, StatLike, Path]], direct: _Direct | None,
    ) -> Iterator[tuple[str, StatLike, str]]:
        """The first pass of :meth:`_copy_below`: everything but the regular files of one
        link, which are returned (made as they are asked for); the directories whose
        metadata is to be applied go to ``pending_dirs``."""
        cut, rels, modes, nlinks = group.cut, walk.rels, walk.st_mode, walk.st_nlink
        expected = self.expected
        left: list[tuple[int, int]] = []  # entry ranges left to ``direct``
        i = lo + 1
        while i < hi:
            mode = modes[i]
            if (stat.S_ISREG(mode) and nlinks[i] == 1) or stat.S_IFMT(mode) == stat.S_IFSOCK:
                i += 1  # the second pass; a socket is neither digested nor copied
                continue
            inner = rels[i][cut:]  # a clean relative path
            src = src_base + inner
            st = walk.stat(i)
            if expected is not None:
                expected.entry(src, st)
            if stat.S_ISDIR(mode):
                path = Path(base + inner)
                made = self.make_dir(st, path, top=False)
                if made == "new" and direct is not None:
                    end = _subtree_end(rels, i, hi)
                    direct.leave(self, walk, group, i, end, base, src_base)
                    left.append((i, end))
                    i = end
                    continue
                if made:
                    pending_dirs.append((src, st, path))
            else:
                self.copy_entry(src, st, base + inner)
            i += 1
        return _unlinked_files(walk, group, base, src_base, lo + 1, hi, left)

    def apply_dirs(self, pending_dirs: list[tuple[StrPath, StatLike, Path]]) -> None:
        """Apply the metadata of directories made or reused, in reverse (deepest first)."""
        for src_dir, st_dir, dir_path in reversed(pending_dirs):
            self.apply_info(src_dir, st_dir, dir_path)

    def copy_files(self, files: Iterable[tuple[StrPath, StatLike, StrPath]]) -> None:
        """Copy regular files that are not hardlinked (their directories exist). Creating a
        file is kernel work that releases the GIL, so many files are copied on a few threads
        (see docs/performance.md for what that buys); each takes the next few files from
        ``files`` when it is done with its last ones, so only those are made at a time."""
        workers = min(_COPY_WORKERS, os.cpu_count() or 1)
        source = iter(files)
        first = list(itertools.islice(source, _PARALLEL_MIN_FILES))
        if workers < 2 or len(first) < _PARALLEL_MIN_FILES:
            for src, st, path in itertools.chain(first, source):
                self.copy_entry(src, st, path)
            return
        import threading
        from concurrent.futures import ThreadPoolExecutor

        chunks = itertools.chain(
            [first], iter(lambda: list(itertools.islice(source, _CHUNK_FILES)), []))
        lock = threading.Lock()
        failed = threading.Event()

        def run() -> None:
            try:
                while not failed.is_set():
                    with lock:
                        chunk = next(chunks, None)
                    if chunk is None:
                        return
                    for src, st, path in chunk:
                        self.copy_entry(src, st, path)
            except BaseException:
                failed.set()  # the others stop after their chunk
                raise

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
            futures = [pool.submit(run) for _ in range(workers)]
            for future in futures:
                future.result()


def _unlinked_files(
    walk: Walk, group: WalkGroup, base: str, src_base: str, lo: int, hi: int,
    skip: Sequence[tuple[int, int]] = (),
) -> Iterator[tuple[str, StatLike, str]]:
    """``(source, lstat, target)`` of each regular file with one link among ``group``'s
    entries ``lo .. hi-1`` but the ranges ``skip`` (sorted), made as they are asked for."""
    cut, rels, modes, nlinks = group.cut, walk.rels, walk.st_mode, walk.st_nlink
    bounds = [*skip, (hi, hi)]
    start = lo
    for stop, resume in bounds:
        for i in range(start, stop):
            if nlinks[i] == 1 and stat.S_ISREG(modes[i]):
                inner = rels[i][cut:]
                yield src_base + inner, walk.stat(i), base + inner
        start = resume


def _subtree_end(rels: Sequence[str], i: int, hi: int) -> int:
    """The index after the last entry below entry ``i`` (a pre-order walk: they follow it)."""
    prefix = rels[i] + "/"
    end = i + 1
    while end < hi and rels[end].startswith(prefix):
        end += 1
    return end


class _Direct:
    """Directories a COPY made through an overlay mount, whose contents are to be written
    into the overlay's upper directory once it is unmounted (see :func:`_copy_plan`)."""

    def __init__(self, mount_root: Path, upper_root: Path) -> None:
        self.mount_root = mount_root
        self.upper_root = os.fspath(upper_root)
        self.later: list[tuple[_Copier, Walk, WalkGroup, int, int, str, str]] = []

    def leave(self, copier: _Copier, walk: Walk, group: WalkGroup, lo: int, hi: int,
              base: str, src_base: str) -> None:
        """Leave what goes below the directory just made for entry ``lo`` of ``group`` (at
        ``base + inner`` in the mount; its entries up to ``hi``) for later, with that
        directory's metadata."""
        rel = rel_to(self.mount_root, Path(base))
        upper_base = self.upper_root + "/" if rel == "." else f"{self.upper_root}/{rel}/"
        self.later.append((copier, walk, group, lo, hi, upper_base, src_base))

    def run(self) -> None:
        """Make what was left, in the upper dir: each directory's first pass, then the
        regular files of all of them in one go (one set of copy threads, not one per
        directory), then the directories' metadata. The directories are disjoint trees,
        so this is each one's own order."""
        if not self.later:
            return
        copier = self.later[0][0]
        files: list[Iterator[tuple[str, StatLike, str]]] = []
        pending: list[list[tuple[StrPath, StatLike, Path]]] = []
        for _, walk, group, lo, hi, base, src_base in self.later:
            inner = walk.rels[lo][group.cut:]
            dirs: list[tuple[StrPath, StatLike, Path]] = [
                (src_base + inner, walk.stat(lo), Path(base + inner))]
            files.append(copier.make_below(walk, group, lo, hi, base, src_base, dirs, None))
            pending.append(dirs)
        copier.copy_files(itertools.chain.from_iterable(files))
        for dirs in reversed(pending):
            copier.apply_dirs(dirs)


def _shared_inodes(walk: Walk) -> bool:
    """Whether two regular files of ``walk`` are one inode (a hard link the copy keeps)."""
    seen: set[tuple[int, int]] = set()
    modes, nlinks, devs, inos = walk.st_mode, walk.st_nlink, walk.st_dev, walk.st_ino
    for i in range(len(walk)):
        if nlinks[i] > 1 and stat.S_ISREG(modes[i]):
            key = (devs[i], inos[i])
            if key in seen:
                return True
            seen.add(key)
    return False


class _Expected:
    """The selection a COPY's key was made of, which the copy must reproduce exactly.

    The copy copies the walk the digest was made of (:attr:`~dockyard.context.hashing.
    SelectionDigest.walk`), never a second listing: an entry added since is not copied, as
    the key does not hold it. Between the digest and the copy a file may still be rewritten,
    chmodded, replaced or removed, so every entry is checked as it is copied against the
    ``lstat`` the walk recorded: a regular file by the ``fstat`` of the descriptor it is
    copied from (after the copy), anything else (and a hard link, which is not read) by a
    fresh ``lstat``. An entry whose stat still equals the walk's and whose state the walk
    proved (its ctime settled) is unchanged, with all it holds; one without a proof (changed
    just before the build) has its metadata compared field by field and its copy's bytes
    hashed. A source that is gone, or any difference, raises
    :class:`~dockyard.errors.SourceChangedError`: the step is keyed again, and a layer never
    holds content its key does not describe."""

    def __init__(self, selection: SelectionDigest, src_root: Path) -> None:
        if selection.walk is None:
            raise ContextError("internal error: a COPY's expected selection has no walk")
        self.root = os.path.normpath(os.path.abspath(src_root))
        self.files = selection.files
        self.parents = selection.parents
        self.walk = selection.walk
        self.proven = selection.proven

    def _meta(self, st: StatLike) -> tuple[str, FileMeta]:
        rel = self.walk.rels[_index(st)]
        meta = self.files.get(rel)
        if meta is None:
            raise _changed(rel)
        return rel, meta

    def entry(self, src: str, st: StatLike) -> None:
        """Check an entry the copy makes without reading it through a descriptor (a
        directory, a symlink, a device, a fifo, a hard link): ``src`` must still be what
        the walk saw as ``st``."""
        if os.path.normpath(os.path.abspath(src)) == self.root:
            return  # the context's own directory: recorded as a constant, never copied
        rel, meta = self._meta(st)
        try:
            now = os.lstat(src)
        except (FileNotFoundError, NotADirectoryError):
            raise _changed(rel, "disappeared") from None
        from dockyard.context.hashing import stat_key

        if self.proven[_index(st)] and stat_key(now) == stat_key(st):
            return
        if _describe(src, now) != (meta.type, meta.mode, meta.size, meta.linkname,
                                   meta.rdev, meta.xattrs):
            raise _changed(rel)
        if stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _changed(rel)  # another file now: a hard link of it would not be the key's

    def copied(self, src: str, src_fd: int, st: StatLike, target: StrPath) -> None:
        """A regular file was copied from ``src_fd`` (``st``: the walk's ``lstat`` of it):
        it must not have changed since the walk, and, if the walk's stat proves nothing, its
        copy must hold the bytes and the xattrs the key was made of."""
        from dockyard.context.hashing import _xattrs, hash_file, stat_key

        rel, meta = self._meta(st)
        if stat_key(os.fstat(src_fd)) != stat_key(st):
            raise _changed(rel)
        if not self.proven[_index(st)] and (
                hash_file(Path(target)) != meta.sha256 or _xattrs(src) != meta.xattrs):
            raise _changed(rel)

    def parent(self, rel: str, path: Path, st: StatLike) -> None:
        """``--parents`` made a directory from the source directory ``rel`` at ``path``,
        whose ``lstat`` was ``st``: the mode it applied and the xattrs it copied must be the
        key's (:attr:`~dockyard.context.hashing.SelectionDigest.parents`)."""
        from dockyard.context.hashing import _xattrs

        meta = self.parents.get(rel)
        if (meta is None or not stat.S_ISDIR(st.st_mode)
                or stat.S_IMODE(st.st_mode) != meta.mode or _xattrs(path) != meta.xattrs):
            raise _changed(rel)

    def linked(self, link: str, st: StatLike) -> None:
        """A symlink was read: its target must be the one the key was made of."""
        rel, meta = self._meta(st)
        if meta.linkname != link:
            raise _changed(rel)

    @contextlib.contextmanager
    def archive(self, walk: Walk, group: WalkGroup, tmpdir: Path) -> Iterator[Path]:
        """The archive ``group`` selects, as the key saw it, to unpack: the file itself
        while its stat proves it (checked again after the unpacking), else a private copy of
        its bytes whose hash matches the key."""
        from dockyard.context.hashing import hash_file, stat_key

        top = walk.stat(group.start)
        rel, meta = self._meta(top)
        if self.proven[group.start]:
            fd = os.open(group.top, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if stat_key(os.fstat(fd)) != stat_key(top):
                    raise _changed(rel)
                yield Path(f"/proc/self/fd/{fd}")
                if stat_key(os.fstat(fd)) != stat_key(top):
                    raise _changed(rel)
            finally:
                os.close(fd)
            return
        tmpdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmpdir, prefix="dockyard-archive-") as scratch:
            private = Path(scratch) / "archive"
            src_fd = os.open(group.top, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                dst_fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    _copy_data(src_fd, dst_fd, top.st_size)
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
            if hash_file(private) != meta.sha256:
                raise _changed(rel)
            yield private


def _index(st: StatLike) -> int:
    """The position in its walk of an entry whose stat the walk made."""
    if not isinstance(st, EntryStat) or st.index < 0:
        raise ContextError("internal error: a copied entry's stat is not its walk's")
    return st.index


def _describe(path: str, st: StatLike) -> tuple[str, int, int, str, tuple[int, int], object]:
    """What the content digest records of the entry at ``path`` (whose ``lstat`` is
    ``st``) besides its bytes, read now (owners aside: the build context's count as 0:0)."""
    from dockyard.context.hashing import _kind, _xattrs

    kind = _kind(st.st_mode)
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else (0, 0)
    return (
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_size if kind == "file" else 0,
        os.readlink(path) if kind == "symlink" else "",
        rdev,
        _xattrs(path),
    )


def _changed(rel: str, how: str = "changed") -> SourceChangedError:
    return SourceChangedError(
        f"{rel} {how} while the step was copying it",
        hint="the step's cache key was made from the earlier state; add files that change "
             "during builds to .dockerignore",
    )


def _clear_target(target: StrPath) -> None:
    """Make room for a non-directory at ``target``; a directory there is an error."""
    if os.path.isdir(target) and not os.path.islink(target):
        raise ContextError(
            f"cannot replace to directory {os.path.basename(target)} with file")
    os.unlink(target)


def _copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes between two file descriptors inside the kernel (sendfile), with a
    read/write loop where the file systems do not support it."""
    done = 0
    try:
        while done < size:
            n = os.sendfile(dst_fd, src_fd, None, min(size - done, _SENDFILE_CHUNK))
            if n == 0:
                return  # the source shrank since it was listed
            done += n
        return
    except OSError as err:
        if done or err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    while chunk := os.read(src_fd, _SENDFILE_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def _copy_xattrs_fd(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError:
        return
    for name in names:
        if not keep_xattr(name):  # what the layer and the key keep, nothing else
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dst_fd, name, os.getxattr(src_fd, name))


def _copy_xattrs(src: StrPath, target: StrPath) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if not keep_xattr(name):
            continue
        with contextlib.suppress(OSError):
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(target, name, value, follow_symlinks=False)


def copy_into(
    src_root: Path,
    sources: Sequence[str],
    dest: str,
    target_root: Path,
    *,
    workdir: str,
    chown: tuple[int, int] | None,
    chmod: int | ChmodSpec | None,
    parents: bool,
    excludes: Sequence[str],
    is_add: bool,
    ignore: PatternMatcher | None,
    preserve_owner: bool = False,
    follow_symlinks: bool = True,
    utime: int | None = None,
    command: str | None = None,
    expect: SelectionDigest | None = None,
    tmpdir: Path | None = None,
    upper_dir: Path | None = None,
) -> Callable[[], None] | None:
    """Copy ``sources`` (below ``src_root``) to ``dest`` inside ``target_root``.

    ``chown`` is a resolved ``(uid, gid)`` (see :func:`resolve_chown`); ``chmod`` an int
    (octal bits) or a :class:`ChmodSpec`. ``ignore`` is the context's .dockerignore matcher
    (None for a stage). ``preserve_owner`` keeps the source ids when there is no chown (True
    for another stage, False for the local context). ``utime`` (seconds) replaces every
    mtime when set. Raises ContextError (missing source, bad destination, corrupt
    archive).

    ``expect`` is the selection the step's key was made of (``digest_selection`` of the
    same sources): the copy then holds exactly that or raises SourceChangedError (see
    :class:`_Expected`); a private copy of an archive that changed just before the build
    goes to ``tmpdir``.

    ``upper_dir`` is the overlay upper directory of ``target_root`` (a mounted overlay), to
    be written only once ``target_root`` is unmounted. The contents of the directories the
    copy makes through ``target_root`` where nothing was may then be left for later: what
    is returned, if anything, makes them in ``upper_dir`` directly and is to be called
    after the unmount (see :func:`_copy_plan`). Without ``upper_dir`` everything is copied
    now and None is returned.
    """
    mode_spec = ChmodSpec(octal=chmod) if isinstance(chmod, int) else chmod
    expected = _Expected(expect, src_root) if expect is not None else None
    copier = _Copier(chown=chown, chmod=mode_spec, preserve_owner=preserve_owner, utime=utime,
                     expected=expected)
    dest_abs = resolve_dest(dest, workdir)
    dest_is_dir = dest_abs.endswith("/")
    exclude_matcher = PatternMatcher(excludes) if excludes else None

    # Resolve and list every source first, so nothing is written when one is missing. With
    # ``expect``, the selection is the walk the key was made of: copied as it is.
    if expected is not None:
        walk = expected.walk
        plan = [(group, split_pivot(group.src)[0] if parents else ".")
                for group in walk.groups]
    else:
        walk = Walk()
        plan = []
        for src in sources:
            pivot, rest = split_pivot(src) if parents else (".", src)
            full = rest if pivot == "." else f"{pivot}/{rest}"
            wildcard = has_wildcards(full)
            matches = resolve_wildcards(src_root, full, follow=follow_symlinks, ignore=ignore)
            if not matches:
                if wildcard:
                    continue
                raise missing_source_error(src, ignore)
            head = split_wildcards(full)[0]
            for match in matches:
                if wildcard and exclude_matcher:
                    below_head = match if head == "." else match[len(head) + 1 :]
                    if exclude_matcher.matches(below_head):
                        continue
                group = select_match(src_root, match, src, exclude_matcher, ignore,
                                     follow_symlinks, walk)
                plan.append((group, pivot))
    if not plan:
        return None

    def guarded(run: Callable[[], Callable[[], None] | None]) -> Callable[[], None] | None:
        try:
            return run()
        except FileNotFoundError as err:
            if expected is None:
                raise
            # a source went away while it was copied
            raise _changed(os.path.relpath(err.filename or "?", src_root),
                           "disappeared") from None

    later = guarded(lambda: _copy_plan(
        copier, walk, plan, src_root, target_root, dest_abs, dest_is_dir, parents, is_add,
        tmpdir, upper_dir))
    if later is None:
        return None
    deferred = later

    def finish() -> None:
        guarded(deferred)

    return finish


def _copy_plan(
    copier: _Copier,
    walk: Walk,
    plan: list[tuple[WalkGroup, str]],
    src_root: Path,
    target_root: Path,
    dest_abs: str,
    dest_is_dir: bool,
    parents: bool,
    is_add: bool,
    tmpdir: Path | None,
    upper_dir: Path | None = None,
) -> Callable[[], None] | None:
    """Copy ``plan`` to ``dest_abs`` in ``target_root``; with ``upper_dir``, maybe only part
    of it now and the rest later, in the upper directory (see :func:`copy_into`).

    Why the rest may skip overlayfs: a directory made through the overlay mount where the
    merged view had nothing (the layers below hold nothing there, or a whiteout, or an
    opaque directory above it hides what they hold) is an upper-only directory. Overlay
    never looks below it in a lower layer (it may mark it opaque, an optimisation it takes
    in a directory that has a lower, which says the same), so every lookup, create, link,
    unlink and attribute change below it acts on the upper directory alone, exactly as the
    same call made there directly, after the unmount. Such a directory is still made
    through the mount, as is everything else: overlay's semantics (copy-up of a lower
    parent's metadata, opaque markers, whiteouts) apply wherever the lower layers show
    through. Only what goes below it is written directly, after everything else, in the
    order the copy would have made it: no other entry of the copy is below it (one source
    only: another could copy into it), and no hard link joins the two sides (the files of
    the walk are all distinct inodes). The copy then writes most files without overlay's
    own lookups, second file object and attribute copies per call, and the unmount has no
    new files to sync (docs/performance.md, section 19). Not for ``--parents``, which
    follows symlinks the copy made itself, in the merged view.
    """
    # Several sources onto a destination without a trailing slash are not rejected (as
    # BuildKit, against its documentation): each is copied onto the same path in turn, so
    # the last file wins, or a directory source makes a directory the later ones land in.
    dest_path = root_path(target_root, dest_abs)

    # fsutil creates the destination's parent (or the destination itself if it is a dir).
    ensure = dest_abs if dest_is_dir else dest_abs.rpartition("/")[0]
    copier.mkdir_all(root_path(target_root, ensure), target_root)

    direct = None
    if upper_dir is not None and len(plan) == 1 and not parents and not _shared_inodes(walk):
        direct = _Direct(target_root, upper_dir)
    _copy_groups(copier, walk, plan, src_root, target_root, dest_path, parents, is_add, tmpdir,
                 direct)
    return direct.run if direct is not None and direct.later else None


def _copy_groups(
    copier: _Copier,
    walk: Walk,
    plan: list[tuple[WalkGroup, str]],
    src_root: Path,
    target_root: Path,
    dest_path: Path,
    parents: bool,
    is_add: bool,
    tmpdir: Path | None,
    direct: _Direct | None = None,
) -> None:
    for group, pivot in plan:
        if parents:
            _copy_with_parents(copier, src_root, target_root, dest_path, walk, group, pivot)
            continue
        top_mode = walk.st_mode[group.start]
        if is_add and stat.S_ISREG(top_mode) and _is_archive(Path(group.top)):
            copier.mkdir_all(dest_path, target_root)
            from dockyard.context.archive import extract_archive

            if copier.expected is None:
                extract_archive(Path(group.top), dest_path)
                continue
            private = tmpdir if tmpdir is not None else Path(tempfile.gettempdir())
            with copier.expected.archive(walk, group, private) as archive:
                extract_archive(archive, dest_path, name=os.path.basename(group.top))
            continue
        target = _prepare_target(copier, target_root, dest_path, group, top_mode)
        copier.copy_tree(walk, group, target, direct)


def _prepare_target(
    copier: _Copier, target_root: Path, dest_path: Path, group: WalkGroup, top_mode: int,
) -> Path:
    """fsutil's prepareTargetDir, with directory sources copying their contents."""
    src_is_dir = stat.S_ISDIR(top_mode)
    dest_exists = dest_path.exists()
    target = dest_path
    if not src_is_dir and dest_exists and dest_path.is_dir():
        base = group.match.rpartition("/")[2]
        if base in ("", "."):
            base = os.path.basename(group.top)
        target = root_path_nofollow(target_root, rel_to(target_root, dest_path) + "/" + base)
    parent = target if (src_is_dir and not dest_exists) else target.parent
    copier.mkdir_all(parent, target_root)
    return target


def _copy_with_parents(
    copier: _Copier,
    src_root: Path,
    target_root: Path,
    dest_path: Path,
    walk: Walk,
    group: WalkGroup,
    pivot: str,
) -> None:
    """``--parents``: recreate the match's path below the pivot; the directories it makes
    get their source's metadata (:func:`dockyard.context.hashing.parent_meta`, which the key
    holds). Both sides are resolved within their roots: a symlink among the source's
    parents, or at one of the destination's, is followed as if its root were ``/``."""
    match = group.match
    dirs = parent_dirs(src_root, pivot, match)
    copier.mkdir_all(dest_path, target_root)
    current = dest_path
    for parent, src_dir in dirs:
        name = parent.rpartition("/")[2]
        current = root_path(target_root, rel_to(target_root, current) + "/" + name)
        if os.path.lexists(current):
            if not current.is_dir():
                raise ContextError(f"cannot copy to non-directory: {rel_to(target_root, current)}")
            continue
        copier.mkdir_all(current.parent, target_root)  # below a dangling link, say
        st = os.lstat(src_dir)
        current.mkdir(mode=0o700)
        copier.apply_info(src_dir, st, current)
        if copier.expected is not None:
            copier.expected.parent(parent, src_dir, st)
    rel = match if pivot == "." else os.path.relpath(match, pivot)
    parts = [p for p in rel.split("/") if p and p != "."]
    target = current
    if parts:
        target = root_path_nofollow(target_root, rel_to(target_root, current) + "/" + parts[-1])
    copier.copy_tree(walk, group, target)


def write_heredocs(
    files: Sequence[tuple[str, str]],
    dest: str,
    target_root: Path,
    *,
    workdir: str,
    chown: tuple[int, int] | None,
    chmod: int | ChmodSpec | None,
    utime: int | None = None,
    tmpdir: Path | None = None,
) -> None:
    """``COPY <<EOF /dest``: write each ``(name, content)`` as a 0644 file (or ``--chmod``),
    then copy it to ``dest`` with the usual rules (several heredocs need a directory)."""
    with tempfile.TemporaryDirectory(dir=tmpdir, prefix="dockyard-heredoc-") as scratch:
        root = Path(scratch)
        names: list[str] = []
        for name, content in files:
            clean = go_clean("/" + name).lstrip("/")
            if not clean or "/" in clean:
                raise ContextError(f"invalid heredoc file name {name!r}")
            path = root / clean
            path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
            os.chmod(path, 0o644)
            names.append(clean)
        copy_into(
            root,
            names,
            dest,
            target_root,
            workdir=workdir,
            chown=chown,
            chmod=chmod,
            parents=False,
            excludes=(),
            is_add=False,
            ignore=None,
            utime=utime,
        )


def add_remote(
    url: str,
    dest: str,
    target_root: Path,
    *,
    workdir: str,
    chown: tuple[int, int] | None,
    chmod: int | ChmodSpec | None,
    checksum: str | None,
    keep_git_dir: bool,
    tmpdir: Path | None = None,
    commit: str | None = None,
) -> str:
    """ADD of an http(s) or git URL; returns the digest of what was fetched.

    A URL's file keeps mode 0600 (unless ``--chmod``) and the Last-Modified time; it is
    never unpacked. A git URL copies the checked-out tree's contents to ``dest``: the tree of
    ``commit`` when given (:func:`dockyard.context.fetch.resolve_git_ref`).
    """
    from dockyard.context.fetch import fetch_git, fetch_url, is_git_url

    with tempfile.TemporaryDirectory(dir=tmpdir, prefix="dockyard-fetch-") as scratch:
        root = Path(scratch)
        if is_git_url(url):
            if checksum:
                raise ContextError("--checksum is not supported for git URLs yet")
            tree = fetch_git(url, root, keep_git_dir=keep_git_dir, commit=commit)
            sources = [rel_to(root, tree)]
            digest = ""
        else:
            fetched = fetch_url(url, root, checksum=checksum)
            sources = [fetched.name]
            digest = fetched.digest
        copy_into(
            root,
            sources,
            dest,
            target_root,
            workdir=workdir,
            chown=chown,
            chmod=chmod,
            parents=False,
            excludes=(),
            is_add=False,
            ignore=None,
            command="ADD",
        )
        return digest


def _is_archive(path: Path) -> bool:
    # tarfile and the decompressors are imported only for ADD of a local file
    from dockyard.context.archive import is_archive

    return is_archive(path)


@contextlib.contextmanager
def context_view(
    ctx_root: Path,
    source: str,
    ignore: PatternMatcher | None,
    tmpdir: Path,
    expect: SelectionDigest | None = None,
) -> Iterator[Path]:
    """What ``RUN --mount=type=bind,source=SOURCE`` of a build context shows: a private copy
    of the selection, made under ``tmpdir`` and removed afterwards.

    As in BuildKit, the mount shows only what ``.dockerignore`` lets through, and writes to
    it (``rw``) never reach the user's files: they go to the copy and vanish with it. With
    ``expect`` (the selection the step's key was made of) the copy is exactly that, or
    SourceChangedError. Owners are 0:0 (as the key records them); a directory source keeps
    its mode, the context's own directory is 0755 (:data:`~dockyard.context.hashing.CONTEXT_ROOT`).
    """
    import shutil

    tmpdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-bind-", dir=tmpdir))
    try:
        word = go_clean("/" + source).lstrip("/") or "."
        copy_into(ctx_root, [word], "/view", scratch, workdir="/", chown=None, chmod=None,
                  parents=False, excludes=(), is_add=False, ignore=ignore,
                  preserve_owner=False, expect=expect, tmpdir=tmpdir)
        view = scratch / "view"
        if view.is_dir() and not view.is_symlink():
            mode = 0o755
            top = expect.files.get(word) if expect is not None else None
            if top is not None and top.type == "dir":
                mode = top.mode
            elif expect is None and word != ".":
                mode = stat.S_IMODE(os.stat(root_path(ctx_root, word)).st_mode)
            os.chmod(view, mode)
        yield view
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def add_fetched(
    blob: Path,
    name: str,
    mtime: int | None,
    dest: str,
    target_root: Path,
    *,
    workdir: str,
    chown: tuple[int, int] | None,
    chmod: int | ChmodSpec | None,
    tmpdir: Path | None = None,
) -> None:
    """ADD of an http(s) URL whose bytes were fetched when the step was keyed (``blob``): the
    file ``name``, mode 0600 (unless ``--chmod``), mtime the server's Last-Modified, never
    unpacked; the same as :func:`add_remote`, without a second request."""
    with tempfile.TemporaryDirectory(dir=tmpdir, prefix="dockyard-fetch-") as scratch:
        root = Path(scratch)
        target = root / name
        src_fd = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _copy_data(src_fd, dst_fd, os.fstat(src_fd).st_size)
                os.fchmod(dst_fd, 0o600)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        if mtime is not None:
            os.utime(target, (mtime, mtime))
        copy_into(root, [name], dest, target_root, workdir=workdir, chown=chown, chmod=chmod,
                  parents=False, excludes=(), is_add=False, ignore=None, command="ADD")
